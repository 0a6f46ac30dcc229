"""`gyoza-grpc worker`: a Worker whose handler runs each run in a container of its image
(`docker_executor`) or through a command (`subprocess_executor`)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta

from gyoza_grpc.client.channel import connection_from_args
from gyoza_grpc.domain.placement import Gpu
from gyoza_grpc.worker.execution import Handler
from gyoza_grpc.worker.runner import Worker, WorkerError, default_worker_id
from gyoza_grpc.worker.subprocess_executor import CommandHandler

# After the shutdown grace, a stopped op's own stop grace plus this long to report FAILED.
_CANCEL_MARGIN_S = 10.0


def machine_cpus() -> int:
    return os.cpu_count() or 1


def machine_ram_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 0


def parse_gpu(text: str) -> tuple[int, int]:
    """`ID:VRAM_MB`, e.g. `0:24000`."""
    gpu_id, sep, vram = text.partition(":")
    try:
        if not sep:
            raise ValueError
        parsed = int(gpu_id), int(vram)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ID:VRAM_MB (e.g. 0:24000), got {text!r}"
        ) from None
    if parsed[0] < 0 or parsed[1] < 0:
        raise argparse.ArgumentTypeError(f"GPU id and VRAM must not be negative: {text!r}")
    return parsed


def build_handler(args: argparse.Namespace) -> Handler:
    """The executor the flags ask for; ValueError for flags that do not go together."""
    if args.stop_grace < 0:
        raise ValueError("--stop-grace must not be negative")
    if args.max_output_bytes < 1:
        raise ValueError("--max-output-bytes must be at least 1")
    env = dict(args.env)
    if args.executor == "command":
        if not args.run_command:
            raise ValueError("--command is required (or GYOZA_WORKER_COMMAND)")
        return CommandHandler(
            args.run_command,
            shell=args.shell,
            env={**os.environ, **env},
            kill_grace_s=args.stop_grace,
            max_output_bytes=args.max_output_bytes,
        )
    if args.run_command or args.shell:
        raise ValueError("--command and --shell are for --executor command")
    try:
        from gyoza_grpc.worker.docker_executor import DockerHandler
    except ImportError as err:
        raise ValueError(
            f"--executor docker needs the docker extra: pip install 'gyoza-grpc[docker]' ({err})"
        ) from None
    return DockerHandler(
        docker_host=args.docker_host or None,
        pull=args.pull,
        network=args.network,
        stop_grace_s=args.stop_grace,
        labels=dict(args.label),
        env=env,
        max_output_bytes=args.max_output_bytes,
    )


def build_worker(args: argparse.Namespace) -> Worker:
    handler = build_handler(args)
    gpus = [Gpu(gpu_id, vram) for gpu_id, vram in args.gpu]
    if len({g.gpu_id for g in gpus}) != len(gpus):
        raise ValueError("each --gpu needs its own ID")
    heartbeat = args.heartbeat_interval
    connection = connection_from_args(args)
    return Worker(
        connection.target,
        args.worker_id or default_worker_id(),
        handler,
        cpu=machine_cpus() if args.cpu is None else args.cpu,
        ram_mb=machine_ram_mb() if args.ram_mb is None else args.ram_mb,
        gpus=gpus,
        tags=args.tag,
        max_concurrency=args.max_concurrency,
        heartbeat_interval=None if heartbeat is None else timedelta(seconds=heartbeat),
        claim_wait=timedelta(seconds=args.claim_wait),
        shutdown_grace=timedelta(seconds=args.shutdown_grace),
        api_key=connection.api_key,
        credentials=connection.credentials,
        cancel_wait=timedelta(seconds=args.stop_grace + _CANCEL_MARGIN_S),
    )


def run_worker(args: argparse.Namespace) -> int:
    """Exit codes: 0 after a clean stop, 1 when the worker cannot start or is refused,
    2 for bad arguments, 130 for Ctrl-C before the signal handlers were installed."""
    try:
        worker = build_worker(args)
    except ValueError as err:
        print(f"gyoza-grpc worker: {err}", file=sys.stderr)
        return 2
    try:
        asyncio.run(worker.run(handle_signals=True))
    except WorkerError as err:
        print(f"gyoza-grpc worker: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
