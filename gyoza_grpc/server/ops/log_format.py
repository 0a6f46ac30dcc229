"""Log output: `text` (one readable line) or `json` (one JSON object a line, for collectors).

A record may carry structured fields as `extra={"fields": {...}}` (the access log does): JSON
puts them at the top level of the object, text appends them as key=value. A small formatter
of our own rather than python-json-logger: fifteen lines, and no dependency on the hot path.

The access log has a faster way to the same output (`access_lines`): when its lines would
reach only `configure_logging`'s handler, it writes each line as the formatter would, without
a LogRecord, and the handler writes the lines of FLUSH_AFTER_S at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, TextIO

FORMATS = ("text", "json")
ACCESS_LOGGER = "gyoza_grpc.access"
ACCESS_MESSAGE = "rpc"
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# Queued access lines are written FLUSH_AFTER_S after the first of them, or at once past
# MAX_PENDING_LINES. Each write lets go of the GIL and grpc's threads take it, so one write per
# call (per turn of the loop) showed in every call's loop time (docs/benchmarks.md).
FLUSH_AFTER_S = 0.05
MAX_PENDING_LINES = 256
# "000" to "999": the milliseconds of a time stamp, without a % per line.
_MILLIS = tuple(f"{i:03d}" for i in range(1000))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = _fields(record)
        if not fields:
            return line
        return line + "".join(
            f" {k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items()
        )


def json_value(value: str | int | float) -> str:
    """`value` as both formatters write a field's value: json.dumps(value, ensure_ascii=False),
    without its encoder set-up (the C string encoder; an int's or a finite float's repr)."""
    if type(value) is str:
        return encode_basestring(value)
    if type(value) is int or (type(value) is float and value - value == 0):  # not inf, nan
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


class AccessLines:
    """One format's access line, built without a LogRecord: head(now) + the fields, each
    key(name) + json_value(value), + tail is what the formatter makes of the same record.

    The time and the level name are read as the formatter would read them, each time; the
    formatted second is kept until the clock or the formatter's time settings change."""

    tail = ""

    def __init__(self, formatter: logging.Formatter, name: str, message: str) -> None:
        self.formatter = formatter
        self._name = name
        self._message = message
        self._keys: dict[str, str] = {}
        self._level = ""
        self._second = -1
        self._before = self._after = ""

    def key(self, name: str) -> str:
        found = self._keys.get(name)
        if found is None:
            found = self._keys[name] = self._key(name)
        return found

    def _key(self, name: str) -> str:
        raise NotImplementedError

    def head(self, now: float) -> str:
        raise NotImplementedError


class JsonAccessLines(AccessLines):
    """JsonFormatter's object: time, level, logger, message, then the fields."""

    tail = "}"

    def _key(self, name: str) -> str:
        return f", {encode_basestring(name)}: "

    def head(self, now: float) -> str:
        # datetime.fromtimestamp's rounding to the microsecond, then isoformat's cut to the ms.
        second = int(now)
        micros = round((now - second) * 1e6)
        if micros >= 1_000_000:
            second += 1
            micros -= 1_000_000
        level = logging.getLevelName(logging.INFO)
        if second == self._second and level is self._level:
            return f"{self._before}{_MILLIS[micros // 1000]}{self._after}"
        stamp = datetime.fromtimestamp(second, UTC).isoformat(timespec="milliseconds")
        if not stamp.endswith(".000+00:00"):  # never: isoformat's layout is fixed
            raise ValueError(f"unexpected time stamp {stamp!r}")
        self._before = '{"time": "' + stamp[:-9]
        self._after = (
            f'+00:00", "level": {encode_basestring(level)}, '
            f'"logger": {encode_basestring(self._name)}, '
            f'"message": {encode_basestring(self._message)}'
        )
        self._second, self._level = second, level
        return f"{self._before}{_MILLIS[micros // 1000]}{self._after}"


class TextAccessLines(AccessLines):
    """TextFormatter's line: asctime, level, logger, message, then key=value for each field."""

    def __init__(self, formatter: logging.Formatter, name: str, message: str) -> None:
        super().__init__(formatter, name, message)
        self._time_settings: tuple[Any, ...] = ()

    def _key(self, name: str) -> str:
        return f" {name}="

    def head(self, now: float) -> str:
        # LogRecord's msecs, then Formatter.formatTime. time.strftime knows no fraction of a
        # second, so with time.localtime or time.gmtime as the converter the formatted second
        # holds for all its milliseconds; any other converter is called each time.
        second = int(now)
        millis = int((now - second) * 1000)
        f = self.formatter
        settings = (f.converter, f.datefmt, f.default_time_format, f.default_msec_format)
        level = logging.getLevelName(logging.INFO)
        if (
            second != self._second
            or level is not self._level
            or settings != self._time_settings
            or not (f.converter is time.localtime or f.converter is time.gmtime)
        ):
            self._before = time.strftime(f.datefmt or f.default_time_format, f.converter(now))
            self._after = f" {level} {self._name} {self._message}"
            self._second, self._level, self._time_settings = second, level, settings
        if f.datefmt or not f.default_msec_format:
            return self._before + self._after
        if f.default_msec_format == "%s,%03d":
            return f"{self._before},{_MILLIS[millis]}{self._after}"
        return f.default_msec_format % (self._before, float(millis)) + self._after


class LogHandler(logging.StreamHandler[TextIO]):
    """configure_logging's handler: a StreamHandler that also takes finished access lines
    (`write_line`) and writes those queued within FLUSH_AFTER_S with one write.

    Any record it emits, and flush() (logging.shutdown at exit, basicConfig(force=True)),
    write the queued lines first, so the output keeps the order in which lines were made."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self.access_lines: AccessLines | None = None
        self.setFormatter(formatter)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        super().setFormatter(fmt)
        kind = type(fmt)
        make = _ACCESS_LINES.get(kind)
        self.access_lines = (
            None if make is None or fmt is None else make(fmt, ACCESS_LOGGER, ACCESS_MESSAGE)
        )

    def write_line(self, line: str) -> None:
        """Queue one finished line (without the terminator): written FLUSH_AFTER_S later by
        the running loop, at once without a loop, or with the queue past its size."""
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.write_pending()
                return
            loop.call_later(FLUSH_AFTER_S, self.write_pending)
        elif len(pending) >= MAX_PENDING_LINES:
            self.write_pending()

    def write_pending(self) -> None:
        """Write the queued lines with one write and one flush, as emit writes one record."""
        if not self._pending:
            return
        with self.lock:  # type: ignore[union-attr]
            pending = self._pending
            count = len(pending)
            if not count:
                return
            terminator = self.terminator
            text = terminator.join(pending[:count]) + terminator
            # write_line appends without the lock (list.append is atomic): a line appended
            # meanwhile is past `count` and stays queued for the next write.
            del pending[:count]
            try:
                stream = self.stream
                stream.write(text)
                if hasattr(stream, "flush"):  # StreamHandler.flush, under the lock held here
                    stream.flush()
            except RecursionError:
                raise
            except Exception:
                self.handleError(
                    logging.LogRecord(
                        ACCESS_LOGGER, logging.INFO, "", 0, ACCESS_MESSAGE, None, None
                    )
                )

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self.write_pending()
        super().emit(record)

    def flush(self) -> None:
        self.write_pending()
        super().flush()

    def setStream(self, stream: TextIO) -> TextIO | None:
        self.write_pending()
        return super().setStream(stream)


_ACCESS_LINES: dict[type, Callable[[logging.Formatter, str, str], AccessLines]] = {
    JsonFormatter: JsonAccessLines,
    TextFormatter: TextAccessLines,
}


def access_lines(logger: logging.Logger) -> tuple[LogHandler, AccessLines] | None:
    """The handler, and its line format, when the access logger's INFO records would go
    through nothing but that LogHandler and its own formatter: the logger and its ancestors
    have no other handler and no filter on the way, the record factory is logging's. Else
    None: the caller goes through `logging`. The caller has checked isEnabledFor(INFO).

    Checked at each line (a few hundred ns): a test's or a user's handler, filter or level
    takes effect at the next line, as it would through `logging`."""
    if logger.handlers or logger.filters or not logger.propagate or logger.name != ACCESS_LOGGER:
        return None
    parent = logger.parent
    root = logging.root
    while parent is not root:
        if parent is None or parent.handlers or not parent.propagate:
            return None
        parent = parent.parent
    handlers = root.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if type(handler) is not LogHandler or handler.filters or handler.level > logging.INFO:
        return None
    lines = handler.access_lines
    if lines is None or lines.formatter is not handler.formatter:
        return None
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    return handler, lines


def configure_logging(level: str, fmt: str, *, access_log: bool = True) -> None:
    """The root handler on stderr in `fmt` (`text` or `json`) at `level`; `access_log=False`
    silences the per-RPC lines (gyoza_grpc.access) and their cost, keeping the rest."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = LogHandler(sys.stderr, JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if not access_log:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)


def flush_access_lines() -> None:
    """Write the access lines still queued (a server that stops writes them before it goes)."""
    for handler in logging.root.handlers:
        if isinstance(handler, LogHandler):
            handler.write_pending()
