"""What the Docker Engine API is asked to create for one attempt: the container's config.

- The image's own entrypoint and command run; stdin is open for the inputs and closed after
  them (`StdinOnce`), stdout and stderr are attached (no TTY: they stay apart).
- Labels `gyoza.run_id`, `gyoza.attempt` and `gyoza.worker_id` name the attempt (operators' own
  labels go beside them), so a container is always found again, even after its worker died.
- Docker's init (`Init`) is PID 1, so SIGTERM reaches the op rather than a shell ignoring it.
- The run's constraints become limits: `cpu` -> `NanoCpus` (cpu x 1e9), `ram_mb` -> `Memory`
  and `MemorySwap` (the same: no swap), the GPU the server chose -> a device request for that
  one GPU (driver `nvidia`) and `NVIDIA_VISIBLE_DEVICES`.
- Environment: the operator's `env`, then GYOZA_RUN_ID, GYOZA_ATTEMPT, GYOZA_WORKER_ID and,
  with a GPU, GYOZA_GPU_ID (the operator cannot set these four).
- The network is `network` (`none` unless the operator says otherwise).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from gyoza_grpc.worker.claims import ClaimedRun

LABEL_RUN_ID = "gyoza.run_id"
LABEL_ATTEMPT = "gyoza.attempt"
LABEL_WORKER_ID = "gyoza.worker_id"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_RESERVED_ENV = frozenset({"GYOZA_RUN_ID", "GYOZA_ATTEMPT", "GYOZA_WORKER_ID", "GYOZA_GPU_ID"})
NANO = 1_000_000_000
MIB = 1024 * 1024


def attempt_labels(run_id: str, attempt: int, worker_id: str) -> dict[str, str]:
    return {LABEL_RUN_ID: run_id, LABEL_ATTEMPT: str(attempt), LABEL_WORKER_ID: worker_id}


def container_name(claim: ClaimedRun) -> str:
    """Readable and unique: the run, the attempt, and a random tail (a run handed back and
    claimed again keeps its attempt number)."""
    run = _NAME_UNSAFE.sub("-", claim.run_id)[:100]
    return f"gyoza-{run}-{claim.attempt}-{secrets.token_hex(3)}"


def container_config(
    claim: ClaimedRun,
    worker_id: str,
    *,
    network: str = "none",
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    variables = {k: v for k, v in (env or {}).items() if k not in _RESERVED_ENV}
    variables["GYOZA_RUN_ID"] = claim.run_id
    variables["GYOZA_ATTEMPT"] = str(claim.attempt)
    variables["GYOZA_WORKER_ID"] = worker_id
    host: dict[str, Any] = {"Init": True, "NetworkMode": network}
    need = claim.constraints
    if need.cpu:
        host["NanoCpus"] = need.cpu * NANO
    if need.ram_mb:
        host["Memory"] = host["MemorySwap"] = need.ram_mb * MIB
    if claim.gpu_id is not None:
        variables["GYOZA_GPU_ID"] = str(claim.gpu_id)
        variables["NVIDIA_VISIBLE_DEVICES"] = str(claim.gpu_id)
        host["DeviceRequests"] = [
            {"Driver": "nvidia", "DeviceIDs": [str(claim.gpu_id)], "Capabilities": [["gpu"]]}
        ]
    return {
        "Image": claim.image,
        "Env": [f"{k}={v}" for k, v in variables.items()],
        "Labels": {**(labels or {}), **attempt_labels(claim.run_id, claim.attempt, worker_id)},
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "HostConfig": host,
    }
