"""The client's IntEnums mirror the proto enums: the same names, the same numbers."""

from __future__ import annotations

from enum import IntEnum

import pytest

from gyoza.v1 import definitions_pb2, runs_pb2, workers_pb2
from gyoza_grpc.client import EventType, InputType, RunState, WorkerState


@pytest.mark.parametrize(
    ("mirror", "proto", "prefix"),
    [
        (RunState, runs_pb2.RunState, "RUN_STATE_"),
        (EventType, runs_pb2.EventType, "EVENT_TYPE_"),
        (WorkerState, workers_pb2.WorkerState, "WORKER_STATE_"),
        (InputType, definitions_pb2.InputType, "INPUT_TYPE_"),
    ],
)
def test_every_proto_value_has_its_member(
    mirror: type[IntEnum], proto: object, prefix: str
) -> None:
    values = dict(proto.items())  # type: ignore[attr-defined]
    assert {m.name: m.value for m in mirror} == {
        name.removeprefix(prefix): number for name, number in values.items()
    }


def test_terminal_states() -> None:
    assert {s for s in RunState if s.is_terminal} == {
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.CANCELLED,
    }
