"""The proto enums as IntEnums: `RunState.COMPLETED` instead of `runs_pb2.RUN_STATE_COMPLETED`.

Each member is the proto's number, so a member compares equal to the field of a message
(`run.state == RunState.COMPLETED`) and can be passed wherever the proto's value goes.
"""

from __future__ import annotations

from enum import IntEnum

from gyoza.v1 import definitions_pb2, runs_pb2, workers_pb2


class RunState(IntEnum):
    UNSPECIFIED = runs_pb2.RUN_STATE_UNSPECIFIED
    PENDING = runs_pb2.RUN_STATE_PENDING
    ASSIGNED = runs_pb2.RUN_STATE_ASSIGNED
    RUNNING = runs_pb2.RUN_STATE_RUNNING
    COMPLETED = runs_pb2.RUN_STATE_COMPLETED
    FAILED = runs_pb2.RUN_STATE_FAILED
    CANCELLED = runs_pb2.RUN_STATE_CANCELLED

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED or CANCELLED: the run is locked until a retry."""
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)


class EventType(IntEnum):
    UNSPECIFIED = runs_pb2.EVENT_TYPE_UNSPECIFIED
    ASSIGNED = runs_pb2.EVENT_TYPE_ASSIGNED
    STARTED = runs_pb2.EVENT_TYPE_STARTED
    INFO = runs_pb2.EVENT_TYPE_INFO
    PROGRESS = runs_pb2.EVENT_TYPE_PROGRESS
    COMPLETED = runs_pb2.EVENT_TYPE_COMPLETED
    FAILED = runs_pb2.EVENT_TYPE_FAILED
    CANCELLED = runs_pb2.EVENT_TYPE_CANCELLED
    ERROR = runs_pb2.EVENT_TYPE_ERROR
    RETRIED = runs_pb2.EVENT_TYPE_RETRIED


class WorkerState(IntEnum):
    UNSPECIFIED = workers_pb2.WORKER_STATE_UNSPECIFIED
    ALIVE = workers_pb2.WORKER_STATE_ALIVE
    EVICTED = workers_pb2.WORKER_STATE_EVICTED


class InputType(IntEnum):
    """The type of an op definition's input (`InputSpec.type`)."""

    UNSPECIFIED = definitions_pb2.INPUT_TYPE_UNSPECIFIED
    STRING = definitions_pb2.INPUT_TYPE_STRING
    INT = definitions_pb2.INPUT_TYPE_INT
    FLOAT = definitions_pb2.INPUT_TYPE_FLOAT
    BOOL = definitions_pb2.INPUT_TYPE_BOOL
    LIST = definitions_pb2.INPUT_TYPE_LIST
    OBJECT = definitions_pb2.INPUT_TYPE_OBJECT
