"""A grpc.aio server whose one unary handler returns its request: the ceiling of bench/suite.py.

No proto, no database: a generic handler on raw bytes, with gyoza-grpc's server options, so
the difference between this and gyoza-grpc is what gyoza-grpc itself costs.

Run: ``python bench/echo_server.py --port PORT`` (until SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc

ECHO = "/bench.Echo/Echo"
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
]


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _identity(b: bytes) -> bytes:
    return b


class _Handler(grpc.GenericRpcHandler):
    def service(self, details: Any) -> Any:
        if details.method == ECHO:
            return grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=_identity, response_serializer=_identity
            )
        return None


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_Handler(),))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
