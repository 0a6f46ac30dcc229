"""`gyoza-grpc workers list`."""

from __future__ import annotations

import argparse

from gyoza.v1 import workers_pb2
from gyoza_grpc.client import Client
from gyoza_grpc.client_cli.commands import Command, Group
from gyoza_grpc.client_cli.failures import EXIT_OK
from gyoza_grpc.client_cli.output import Output, enum_name, when

W = workers_pb2


def _gpus(resources: workers_pb2.Resources) -> str:
    return ", ".join(f"{g.gpu_id}:{g.vram_mb}" for g in resources.gpus) or "-"


def list_workers(args: argparse.Namespace, client: Client, out: Output) -> int:
    workers = client.list_workers()
    if out.as_json:
        out.json_document(W.ListWorkersResponse(workers=workers))
        return EXIT_OK
    out.table(
        (
            "WORKER",
            "STATE",
            "CPU FREE",
            "RAM MB FREE",
            "GPUS FREE",
            "TAGS",
            "RUNS",
            "LAST HEARTBEAT",
            "NOT CLAIMING BECAUSE",
        ),
        (
            (
                w.worker_id,
                enum_name(W.WorkerState, w.state, "WORKER_STATE_"),
                f"{w.free.cpu}/{w.resources.cpu}",
                f"{w.free.ram_mb}/{w.resources.ram_mb}",
                _gpus(w.free),
                ", ".join(w.tags) or "-",
                str(len(w.held)),
                when(w.last_heartbeat),
                w.not_ready_reason or "-",
            )
            for w in workers
        ),
    )
    return EXIT_OK


WORKERS = Group(
    "workers",
    "see the workers the server knows",
    (
        Command(
            "list",
            "every known worker, alive or evicted, with free capacity",
            list_workers,
        ),
    ),
)
