"""A claimed run as the worker's handlers see it: inputs as a plain dict, constraints as the
domain's, the GPU the server chose, and the attempt that fences every report of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gyoza.v1 import runs_pb2, workers_pb2
from gyoza_grpc.client.convert import to_dict
from gyoza_grpc.domain.model import Constraints


def _opt(msg: Any, name: str) -> int | None:
    return int(getattr(msg, name)) if msg.HasField(name) else None


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """One run handed to this worker: report its events with `attempt`."""

    run_id: str
    attempt: int
    inputs: dict[str, Any]
    constraints: Constraints
    gpu_id: int | None
    priority: int
    image: str
    run: runs_pb2.Run

    @classmethod
    def from_pb(cls, claim: workers_pb2.Claim) -> ClaimedRun:
        run = claim.run
        c = run.constraints
        return cls(
            run_id=run.id,
            attempt=claim.attempt,
            inputs=to_dict(run.inputs),
            constraints=Constraints(
                cpu=_opt(c, "cpu"),
                ram_mb=_opt(c, "ram_mb"),
                vram_mb=_opt(c, "vram_mb"),
                gpu_id=_opt(c, "gpu_id"),
            ),
            gpu_id=claim.gpu_id if claim.HasField("gpu_id") else None,
            priority=run.priority,
            image=run.image,
            run=run,
        )
