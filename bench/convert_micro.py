"""Micro-benchmark of the proto <-> domain conversions on the hot RPC paths (api/convert.py).

Per call, in microseconds (best of `--repeat` rounds of timeit, each of `-n` calls): reading a
CreateRunRequest (spec_from_create), making the run (domain.runs.new_run), answering with it
(run_to_pb, and run_to_pb with 10 events as a full GetRun does), one AddEvent reply's event
(event_to_pb), and the Struct <-> dict conversions alone, each for a small request (inputs
{"n": 1, "task": 3}) and a bigger nested one; CreateRun's reply, and all three in a row (what
CreateRun does besides the store). Times are this process's CPU time, so other load on the
machine distorts them less than wall time would.

With ``--before REV``, the same calls on api/convert.py and domain/runs.py as they were at git
revision REV, round for round with the current code, and the speed-up.

Run by hand, never by the test suite:
``nice -n 19 .venv/bin/python bench/convert_micro.py [--before REV]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `gyoza_grpc` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.protobuf import struct_pb2

from gyoza.v1 import runs_pb2
from gyoza_grpc.domain.limits import DEFAULT_LIMITS
from gyoza_grpc.domain.model import Event, EventType, Run, RunState
from gyoza_grpc.domain.runs import new_run
from gyoza_grpc.server.api import convert

REPO = Path(__file__).resolve().parent.parent
SMALL: dict[str, Any] = {"n": 1, "task": 3}
BIG: dict[str, Any] = {
    "dataset": {"name": "imagenet-1k", "splits": ["train", "val"], "shards": 128, "cache": None},
    "model": {
        "arch": "resnet50",
        "layers": [64, 128, 256, 512],
        "dropout": 0.1,
        "flags": {"amp": True, "compile": False, "channels_last": True},
    },
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "wd": 5e-5, "schedule": [30, 60, 90]},
    "epochs": 100,
    "seed": 1234,
    "tags": ["baseline", "gpu", "nightly"],
    "note": "résumé run: keep the checkpoints",
}
NOW = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _struct(doc: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(doc)
    return s


def _request(doc: dict[str, Any]) -> runs_pb2.CreateRunRequest:
    return runs_pb2.CreateRunRequest(
        image="ghcr.io/acme/train:1.4.2",
        priority=7,
        inputs=_struct(doc),
        event_delivery=runs_pb2.EventDelivery(topic="training", attributes=_struct({"team": "ml"})),
        request_id="req-5d0c1f0e",
    )


def _events(run_id: str, n: int) -> list[Event]:
    return [
        Event(
            run_id=run_id,
            seq=i,
            attempt=1,
            type=EventType.PROGRESS,
            time=NOW + timedelta(seconds=i),
            state=RunState.RUNNING,
            msg="step",
            progress=i,
            payload={"step": float(i), "loss": 0.5},
        )
        for i in range(n)
    ]


def _reply(conv: Any, run: Run) -> runs_pb2.CreateRunResponse:
    """CreateRun's response as the servicer builds it: in place if `conv` can (fill_run)."""
    if not hasattr(conv, "fill_run"):
        return runs_pb2.CreateRunResponse(run=conv.run_to_pb(run))
    out = runs_pb2.CreateRunResponse()
    conv.fill_run(out.run, run)
    return out


def cases(
    conv: Any = convert, make_run: Callable[..., Run] = new_run
) -> list[tuple[str, Callable[[], object]]]:
    """(name, call) pairs; `conv` and `make_run` stand for api.convert and runs.new_run (an
    older copy of either can be passed to compare)."""
    out: list[tuple[str, Callable[[], object]]] = []
    max_bytes = DEFAULT_LIMITS.max_json_bytes
    for label, doc in (("small", SMALL), ("big", BIG)):
        req = _request(doc)
        spec = conv.spec_from_create(req, max_bytes)
        run = make_run(spec, NOW)
        events = _events(run.id, 10)
        inputs = req.inputs
        out += [
            (f"spec_from_create[{label}]", lambda r=req: conv.spec_from_create(r, max_bytes)),
            (f"new_run[{label}]", lambda s=spec: make_run(s, NOW)),
            (f"run_to_pb[{label}]", lambda r=run: conv.run_to_pb(r)),
            (f"run_to_pb+10 events[{label}]", lambda r=run, e=events: conv.run_to_pb(r, e)),
            (
                f"struct_to_dict[{label}]",
                lambda s=inputs: conv.struct_to_dict(s, "inputs", max_bytes),
            ),
            (f"dict_to_struct[{label}]", lambda d=spec.inputs: conv.dict_to_struct(d)),
            (f"CreateRun reply[{label}]", lambda r=run: _reply(conv, r)),
            (
                f"CreateRun, all but the store[{label}]",
                lambda r=req: _reply(conv, make_run(conv.spec_from_create(r, max_bytes), NOW)),
            ),
        ]
    event = _events("r", 1)[0]
    out.append(("event_to_pb", lambda: conv.event_to_pb(event)))
    return out


def _module_at(rev: str, path: str, name: str, scratch: Path) -> Any:
    """The module at `path` (in this repository) as it was at git revision `rev`."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    file = scratch / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_call(fn: Callable[[], object], n: int) -> float:
    return timeit.Timer(fn, timer=time.process_time).timeit(n) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="calls per round")
    parser.add_argument("--repeat", type=int, default=9, help="rounds (the best is reported)")
    parser.add_argument("-k", "--only", default="", help="only the cases containing this")
    parser.add_argument("--before", metavar="REV", help="compare with the code at this revision")
    args = parser.parse_args()
    if args.before is None:
        for name, fn in cases():
            if args.only in name:
                best = min(_per_call(fn, args.n) for _ in range(args.repeat))
                print(f"{name:36s} {best * 1e6:8.2f} us")
        return
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        old_convert = _module_at(
            args.before, "gyoza_grpc/server/api/convert.py", "old_convert", scratch
        )
        old_runs = _module_at(args.before, "gyoza_grpc/domain/runs.py", "old_runs", scratch)
        print(f"{'per call (us)':36s} {args.before[:12]:>12s} {'now':>8s}  speed-up")
        pairs = zip(cases(old_convert, old_runs.new_run), cases(), strict=True)
        for (name, before), (_, after) in pairs:
            if args.only not in name:
                continue
            b, a = [], []
            for _ in range(args.repeat):  # alternate, so both see the same machine
                b.append(_per_call(before, args.n))
                a.append(_per_call(after, args.n))
            print(f"{name:36s} {min(b) * 1e6:12.2f} {min(a) * 1e6:8.2f}  x{min(b) / min(a):.2f}")


if __name__ == "__main__":
    main()
