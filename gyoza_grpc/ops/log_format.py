"""Log output: `text` (one readable line) or `json` (one JSON object a line, for collectors).

A record may carry structured fields as `extra={"fields": {...}}` (the access log does): JSON
puts them at the top level of the object, text appends them as key=value. A small formatter
of our own rather than python-json-logger: fifteen lines, and no dependency on the hot path.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
ACCESS_LOGGER = "gyoza_grpc.access"
_TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


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


def configure_logging(level: str, fmt: str, *, access_log: bool = True) -> None:
    """The root handler on stderr in `fmt` (`text` or `json`) at `level`; `access_log=False`
    silences the per-RPC lines (gyoza_grpc.access) and their cost, keeping the rest."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if not access_log:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
