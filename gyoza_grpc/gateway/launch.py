"""`gyoza-grpc gateway`: imports aiohttp only here, so the command says how to install the
`rest` extra when it is missing instead of failing with a traceback."""

from __future__ import annotations

import argparse
import asyncio
import sys

MISSING_EXTRA = "gyoza-grpc: the REST gateway needs aiohttp: pip install 'gyoza-grpc[rest]'"


def run_gateway(args: argparse.Namespace) -> int:
    try:
        from gyoza_grpc.gateway.app import serve_gateway
    except ImportError as err:
        if not (err.name or "").startswith("aiohttp"):
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve_gateway(args.target, args.host, args.port, timeout_s=args.timeout))
    except OSError as err:  # the port is taken or the address is not ours
        print(f"gyoza-grpc: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
