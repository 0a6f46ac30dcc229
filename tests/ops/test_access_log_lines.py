"""The access log's direct lines: when configure_logging's handler is the only one its lines
reach, the access log writes each line itself (no LogRecord) and the handler writes a loop
turn's lines at once. The output must be exactly what `logging` would have written."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from gyoza.v1 import runs_pb2, runs_pb2_grpc, topics_pb2, workers_pb2
from gyoza_grpc.server.api import access_log
from gyoza_grpc.server.api.access_log import MethodLog
from gyoza_grpc.server.ops import log_format
from gyoza_grpc.server.ops.log_format import (
    ACCESS_LOGGER,
    JsonFormatter,
    LogHandler,
    TextFormatter,
    access_lines,
    configure_logging,
    flush_access_lines,
)
from tests.conftest import launch
from tests.ops.helpers import access_log as captured_access_log

FORMATS = ("json", "text")


class Stream(io.StringIO):
    """A StringIO that counts its writes and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class _Context:
    def code(self) -> None:
        return None


def _formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


@contextmanager
def only(handler: logging.Handler) -> Iterator[None]:
    """`handler` as the root logger's only handler (pytest's own set aside), INFO and up, the
    access logger at its default; everything restored after."""
    root = logging.getLogger()
    access = logging.getLogger(ACCESS_LOGGER)
    saved, root_level, access_level = root.handlers[:], root.level, access.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    access.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(root_level)
        access.setLevel(access_level)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.time (and time_ns, which LogRecord reads on Python 3.13) return clock[0]."""
    now = [1_717_171_717.25]
    monkeypatch.setattr(time, "time", lambda: now[0])
    monkeypatch.setattr(time, "time_ns", lambda: int(now[0] * 1e9))
    return now


def _methods() -> dict[str, MethodLog]:
    names = {
        "get": ("/gyoza.v1.RunService/GetRun", False),
        "create": ("/gyoza.v1.RunService/CreateRun", False),
        "watch": ("/gyoza.v1.RunService/WatchEvents", True),
        "topic": ("/gyoza.v1.TopicService/WatchTopic", True),
        "beat": ("/gyoza.v1.WorkerService/Heartbeat", False),
        "unknown": ("/unknown", False),
    }
    return {k: MethodLog(name, None, streaming=s) for k, (name, s) in names.items()}


# Times chosen around the edges: a millisecond's, a second's (JSON rounds to the µs first).
_TIMES = (1_717_171_717.25, 1_717_171_717.9994999, 1_717_171_718.9999996, 1_000_000_000.0)
_ODD = 'é"\\\x01\u2028\U0001f600 ' + "x" * 300


def _calls(
    methods: dict[str, MethodLog],
) -> list[tuple[MethodLog, Any, str, float, dict[str, Any]]]:
    peer = "ipv4:127.0.0.1:50412"
    return [
        (methods["get"], runs_pb2.GetRunRequest(id="r-1"), "OK", 0.0123456, {"peer": peer}),
        (
            methods["get"],
            runs_pb2.GetRunRequest(id=_ODD),
            "NOT_FOUND",
            1e-7,
            {"peer": "ipv6:[::1]:1"},
        ),
        (methods["get"], None, "INVALID_ARGUMENT", 0.0, {}),
        (methods["create"], runs_pb2.CreateRunRequest(image="img"), "OK", 2.5, {"peer": peer}),
        (
            methods["watch"],
            runs_pb2.WatchEventsRequest(run_id="r-2"),
            "OK",
            61.0000005,
            {"peer": peer, "stream": True, "sent": 3},
        ),
        (
            methods["topic"],
            topics_pb2.WatchTopicRequest(topic="orders"),
            "CANCELLED",
            0.1,
            {"peer": peer, "stream": True, "sent": 0},
        ),
        (methods["beat"], workers_pb2.HeartbeatRequest(worker_id="w-7"), "OK", 5e-4, {}),
        (methods["beat"], workers_pb2.HeartbeatRequest(), "UNAVAILABLE", 0.0015, {"peer": peer}),
        (methods["unknown"], b"\xff", "UNIMPLEMENTED", 1e-3, {"peer": peer}),
        (methods["get"], runs_pb2.GetRunRequest(id="r-3"), "OK", 0.002, {"peer": None}),
    ]


def _log_all(handler: LogHandler, clock: list[float], *, direct: bool) -> None:
    """Every call at every time, through the direct path or (a filter on the handler turns
    it off) through `logging`; outside a loop, so each line is written at once."""
    if not direct:
        handler.addFilter(lambda record: True)
    assert (access_lines(access_log.log) is not None) is direct
    for now in _TIMES:
        clock[0] = now
        for m, request, code, seconds, kwargs in _calls(_methods()):
            m.finish(request, _Context(), code, seconds, **kwargs)


@pytest.mark.parametrize("fmt", FORMATS)
def test_direct_lines_are_what_logging_writes(fmt: str, clock: list[float]) -> None:
    out = {}
    for direct in (True, False):
        stream = Stream()
        handler = LogHandler(stream, _formatter(fmt))
        with only(handler):
            _log_all(handler, clock, direct=direct)
        out[direct] = stream.getvalue()
    assert out[True] == out[False]
    assert out[True].count("\n") == len(_TIMES) * len(_calls(_methods()))
    if fmt == "json":
        assert '"time": "2024-05-31T16:08:39.000+00:00"' in out[True]  # .9999996 rounds up
    else:
        assert "x" * 129 not in out[True] and " messages=3 run_id=" in out[True]


@pytest.mark.parametrize("fmt", FORMATS)
def test_formatter_settings_and_level_names_are_followed(fmt: str, clock: list[float]) -> None:
    """What a user may change without replacing our formatter: the level's name, and for
    text the time converter and layouts. The direct line follows, the second it changes."""

    def variants(formatter: logging.Formatter) -> Iterator[None]:
        yield
        logging.addLevelName(logging.INFO, "NOTE")
        yield
        formatter.converter = time.gmtime  # type: ignore[method-assign]
        yield
        formatter.converter = lambda t: time.gmtime(t + 0.5)  # type: ignore[method-assign]
        yield
        formatter.default_msec_format = "%s.%03d"
        yield
        formatter.default_msec_format = None
        yield
        formatter.datefmt = "%d/%m %H:%M"
        yield

    out = {}
    for direct in (True, False):
        stream = Stream()
        handler = LogHandler(stream, _formatter(fmt))
        with only(handler):
            if not direct:
                handler.addFilter(lambda record: True)
            try:
                for _ in variants(handler.formatter):  # type: ignore[arg-type]
                    for m, request, code, seconds, kwargs in _calls(_methods())[:2]:
                        m.finish(request, _Context(), code, seconds, **kwargs)
            finally:
                logging.addLevelName(logging.INFO, "INFO")
                logging._nameToLevel.pop("NOTE", None)
        out[direct] = stream.getvalue()
    assert out[True] == out[False]
    assert "NOTE" in out[True]


async def test_the_lines_of_a_flush_interval_are_one_write_in_order(clock: list[float]) -> None:
    stream = Stream()
    handler = LogHandler(stream, JsonFormatter())
    m = _methods()["get"]
    with only(handler):
        for i in range(5):
            m.finish(runs_pb2.GetRunRequest(id=f"r-{i}"), _Context(), "OK", 0.001)
        assert stream.writes == 0  # queued
        await asyncio.sleep(0)
        assert stream.writes == 0  # still: lines go out FLUSH_AFTER_S after the first
        await asyncio.sleep(log_format.FLUSH_AFTER_S * 1.5)
        assert (stream.writes, stream.flushes) == (1, 1)
        m.finish(runs_pb2.GetRunRequest(id="r-5"), _Context(), "OK", 0.001)
        await asyncio.sleep(log_format.FLUSH_AFTER_S * 1.5)
    assert stream.writes == 2
    ids = [line.split('"run_id": ')[1] for line in stream.getvalue().splitlines()]
    assert ids == [f'"r-{i}"}}' for i in range(6)]


async def test_a_full_queue_is_written_at_once(clock: list[float]) -> None:
    stream = Stream()
    handler = LogHandler(stream, TextFormatter())
    m = _methods()["get"]
    count = 2 * log_format.MAX_PENDING_LINES + 1
    with only(handler):
        for i in range(count):
            m.finish(runs_pb2.GetRunRequest(id=f"r-{i}"), _Context(), "OK", 0.001)
        assert stream.writes == 2
        await asyncio.sleep(log_format.FLUSH_AFTER_S * 1.5)
    lines = stream.getvalue().splitlines()
    assert [line.rsplit("run_id=", 1)[1] for line in lines] == [f'"r-{i}"' for i in range(count)]


async def test_other_records_keep_their_place_after_queued_lines(clock: list[float]) -> None:
    stream = Stream()
    handler = LogHandler(stream, TextFormatter())
    m = _methods()["get"]
    with only(handler):
        m.finish(runs_pb2.GetRunRequest(id="first"), _Context(), "OK", 0.001)
        logging.getLogger("gyoza_grpc.server").warning("in between")
        m.finish(runs_pb2.GetRunRequest(id="last"), _Context(), "OK", 0.001)
        await asyncio.sleep(log_format.FLUSH_AFTER_S * 1.5)
    first, between, last = stream.getvalue().splitlines()
    assert first.endswith('run_id="first"') and last.endswith('run_id="last"')
    assert between.endswith("WARNING gyoza_grpc.server in between")


async def test_queued_lines_are_written_by_a_flush(clock: list[float]) -> None:
    stream = Stream()
    handler = LogHandler(stream, JsonFormatter())
    m = _methods()["get"]
    with only(handler):
        m.finish(runs_pb2.GetRunRequest(id="a"), _Context(), "OK", 0.001)
        flush_access_lines()
        assert stream.getvalue().count("\n") == 1
        m.finish(runs_pb2.GetRunRequest(id="b"), _Context(), "OK", 0.001)
        handler.flush()  # what logging.shutdown and basicConfig(force=True) call
        assert stream.getvalue().count("\n") == 2
        await asyncio.sleep(0)
    assert stream.getvalue().count("\n") == 2


def test_another_handler_or_filter_on_the_way_means_logging(clock: list[float]) -> None:
    """The tests' own capture (a handler on the access logger), a second root handler, a
    logger filter, a level on the handler: each takes the lines through `logging`."""
    stream = Stream()
    handler = LogHandler(stream, JsonFormatter())
    access = logging.getLogger(ACCESS_LOGGER)
    m = _methods()["get"]
    with only(handler):
        assert access_lines(access) is not None
        with captured_access_log() as captured:
            assert access_lines(access) is None
            m.finish(runs_pb2.GetRunRequest(id="r-1"), _Context(), "OK", 0.001)
        assert captured.lines()[0]["run_id"] == "r-1"
        assert stream.getvalue() == captured.text  # the root handler had it too, at once
        logging.getLogger().addHandler(logging.NullHandler())
        assert access_lines(access) is None
        logging.getLogger().handlers.pop()
        access.addFilter(lambda record: True)
        assert access_lines(access) is None
        access.filters.clear()
        handler.setLevel(logging.WARNING)
        assert access_lines(access) is None
        m.finish(runs_pb2.GetRunRequest(id="r-2"), _Context(), "OK", 0.001)
        handler.setLevel(logging.NOTSET)
        handler.setFormatter(logging.Formatter())
        assert access_lines(access) is None
        handler.setFormatter(TextFormatter())
        assert access_lines(access) is not None
    assert stream.getvalue().count("\n") == 1


def test_nothing_below_info_or_when_disabled(clock: list[float]) -> None:
    stream = Stream()
    handler = LogHandler(stream, JsonFormatter())
    m = _methods()["get"]
    with only(handler):
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)
        m.finish(runs_pb2.GetRunRequest(id="r-1"), _Context(), "OK", 0.001)
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.NOTSET)
        logging.disable(logging.INFO)
        try:
            m.finish(runs_pb2.GetRunRequest(id="r-1"), _Context(), "OK", 0.001)
        finally:
            logging.disable(logging.NOTSET)
    assert stream.getvalue() == ""


def test_configure_logging_sets_up_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = Stream()
    monkeypatch.setattr(sys, "stderr", stderr)
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        configure_logging("info", "text")
        (handler,) = root.handlers
        assert isinstance(handler, LogHandler) and handler.stream is stderr
        assert access_lines(access_log.log) is not None
        _methods()["get"].finish(runs_pb2.GetRunRequest(id="r-1"), _Context(), "OK", 0.001)
        assert " INFO gyoza_grpc.access rpc method=" in stderr.getvalue()
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


async def test_every_line_is_written_by_the_time_the_server_stopped(sqlite_url: str) -> None:
    stream = Stream()
    with only(LogHandler(stream, JsonFormatter())):
        gs = await launch(sqlite_url)
        try:
            async with grpc.aio.insecure_channel(gs.target) as ch:
                runs = runs_pb2_grpc.RunServiceStub(ch)
                run = (await runs.CreateRun(runs_pb2.CreateRunRequest(image="img"))).run
                calls = [runs.GetRun(runs_pb2.GetRunRequest(id=run.id)) for _ in range(20)]
                await asyncio.gather(*calls)
        finally:
            await gs.stop(0)
        text = stream.getvalue()
    assert text.count('"method": "gyoza.v1.RunService/GetRun"') == 20
    assert text.index("CreateRun") < text.index("GetRun")


def test_queued_lines_are_written_at_interpreter_exit() -> None:
    """A loop stopped before the turn that would write its lines: logging.shutdown (atexit)
    flushes the handler, which writes them."""
    script = textwrap.dedent(
        """
        import asyncio
        from gyoza_grpc.server.api.access_log import MethodLog
        from gyoza_grpc.server.ops.log_format import configure_logging

        configure_logging("info", "json")
        m = MethodLog("/gyoza.v1.RunService/GetRun", None, streaming=False)

        async def main():
            for _ in range(3):
                m.finish(None, None, "OK", 0.001, peer="p")
            asyncio.get_running_loop().stop()

        loop = asyncio.new_event_loop()
        loop.create_task(main())
        loop.run_forever()
        loop.close()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.count('"method": "gyoza.v1.RunService/GetRun"') == 3, done.stderr
