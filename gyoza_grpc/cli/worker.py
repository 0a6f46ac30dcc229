"""`gyoza-grpc worker`: the worker's flags (executor, resources, connection), and starting it."""

from __future__ import annotations

import argparse

from gyoza_grpc.cli.flags import env, env_option, int32, key_value
from gyoza_grpc.client.channel import add_connection_flags

NAME = "worker"


def _gpu(text: str) -> tuple[int, int]:
    from gyoza_grpc.worker.launch import parse_gpu

    return parse_gpu(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="run a worker that executes each run in a container of its image, or a command",
        description="Claim runs that fit these resources and run each: in a container of the "
        "run's image (--executor docker) or through COMMAND (--executor command, the "
        "default). Either way the op gets the inputs as JSON on its stdin and writes the "
        "outputs as a JSON object on its stdout, 'progress: N' and 'info: TEXT' lines on its "
        "stderr. SIGTERM or SIGINT stops claiming and lets running runs finish within "
        "--shutdown-grace.",
    )
    env_option(
        worker,
        "--executor",
        "GYOZA_WORKER_EXECUTOR",
        "command",
        "docker: each run in a container of its image (needs the docker extra); "
        "command: each run through --command (default %(default)s)",
        choices=("docker", "command"),
    )
    worker.add_argument(
        "--command",
        dest="run_command",
        metavar="COMMAND",
        default=env("GYOZA_WORKER_COMMAND", ""),
        help="--executor command: run for each run, split like a shell would (no shell is "
        "used unless --shell) [env GYOZA_WORKER_COMMAND]",
    )
    worker.add_argument("--shell", action="store_true", help="run COMMAND with /bin/sh -c")
    docker = worker.add_argument_group("--executor docker")
    env_option(
        docker,
        "--docker-host",
        "DOCKER_HOST",
        "",
        "the Docker Engine API: unix:///PATH (a podman socket works too) or tcp://HOST:PORT "
        "(default the local socket, unix:///var/run/docker.sock)",
        metavar="URL",
    )
    env_option(
        docker,
        "--pull",
        "GYOZA_WORKER_PULL",
        "missing",
        "pull a run's image only when the engine lacks it, always, or never (default %(default)s)",
        choices=("missing", "always", "never"),
    )
    env_option(
        docker,
        "--network",
        "GYOZA_WORKER_NETWORK",
        "none",
        "the network containers join: none (default: no network but loopback), bridge, or "
        "a network's name",
        metavar="NAME",
    )
    docker.add_argument(
        "--label",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="a label on every container, besides gyoza.run_id, gyoza.attempt and "
        "gyoza.worker_id; repeat for more",
    )
    worker.add_argument(
        "--env",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="a variable every op gets (a container's environment, or added to the "
        "command's); repeat for more",
    )
    worker.add_argument(
        "--stop-grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="when a run is stopped (cancelled, shutdown), how long its op gets between "
        "SIGTERM and SIGKILL (default %(default)s)",
    )
    worker.add_argument(
        "--max-output-bytes",
        type=int,
        default=1024 * 1024,
        metavar="N",
        help="the largest stdout an op may write (its outputs); past it the op is stopped and "
        "the run fails (default %(default)s, the server's default --max-json-bytes)",
    )
    worker.add_argument(
        "--worker-id",
        default=env("GYOZA_WORKER_ID", ""),
        help="unique per worker process (default HOSTNAME-PID) [env GYOZA_WORKER_ID]",
    )
    worker.add_argument("--cpu", type=int32, help="CPUs to declare (default: this machine's)")
    worker.add_argument("--ram-mb", type=int32, help="RAM to declare (default: this machine's)")
    worker.add_argument(
        "--gpu",
        action="append",
        type=_gpu,
        default=[],
        metavar="ID:VRAM_MB",
        help="a GPU to declare, e.g. 0:24000; repeat for more",
    )
    worker.add_argument("--tag", action="append", default=[], help="a tag; repeat for more")
    worker.add_argument(
        "--max-concurrency", type=int, help="runs at once (default: --cpu, at least 1)"
    )
    worker.add_argument(
        "--heartbeat-interval",
        type=float,
        metavar="SECONDS",
        help="default: a third of the server's lease",
    )
    worker.add_argument(
        "--claim-wait",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="how long one claim waits for work (long-poll, at most 60; default %(default)s)",
    )
    worker.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running runs get to finish before they are killed and "
        "reported FAILED (default %(default)s)",
    )
    add_connection_flags(worker)


def run(args: argparse.Namespace) -> int:
    from gyoza_grpc.worker.launch import run_worker

    return run_worker(args)
