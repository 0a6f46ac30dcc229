"""`gyoza-grpc gateway`: the REST gateway's flags, and starting it."""

from __future__ import annotations

import argparse

from gyoza_grpc.cli.flags import env_option, port
from gyoza_grpc.client.channel import add_target_flag

NAME = "gateway"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="serve the original gyoza REST routes, translated to gRPC calls",
        description="A JSON-over-HTTP gateway to a gyoza-grpc server: GET/POST /runs, "
        "/runs/{id}/..., /definitions/{name}, server-sent events at /runs/{id}/events/stream, "
        "the OpenAPI document at /openapi.json. Needs the rest extra: "
        "pip install 'gyoza-grpc[rest]'.",
    )
    add_target_flag(gateway, "the gRPC server")
    env_option(
        gateway,
        "--host",
        "GYOZA_GATEWAY_HOST",
        "127.0.0.1",
        "address to listen on (default %(default)s)",
    )
    env_option(
        gateway,
        "--port",
        "GYOZA_GATEWAY_PORT",
        5555,
        "port to listen on (default %(default)s)",
        type=port,
    )
    env_option(
        gateway,
        "--timeout",
        "GYOZA_GATEWAY_TIMEOUT",
        30,
        "deadline of each gRPC call but the event stream; past it: 504",
        type=float,
        metavar="SECONDS",
    )


def run(args: argparse.Namespace) -> int:
    from gyoza_grpc.gateway.launch import run_gateway

    return run_gateway(args)
