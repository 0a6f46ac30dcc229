"""`gyoza-grpc workers list`."""

from __future__ import annotations

import argparse
from typing import Any

from gyoza.v1 import workers_pb2
from gyoza_grpc.client import Client
from gyoza_grpc.client_cli.failures import EXIT_OK
from gyoza_grpc.client_cli.output import Output, enum_name, when

W = workers_pb2


def add_workers(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    workers = sub.add_parser("workers", help="see the workers the server knows")
    cmds = workers.add_subparsers(dest="workers_command", required=True, parser_class=parser_class)
    ls = cmds.add_parser(
        "list", parents=[common], help="every known worker, alive or evicted, with free capacity"
    )
    ls.set_defaults(client_handler=list_workers)


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
