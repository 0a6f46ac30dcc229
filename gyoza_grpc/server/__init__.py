"""The gyoza gRPC server: its transport (`api/`), store (`store/`), streams (`streams/`) and
operations (`ops/`), assembled by `grpc_server`.

`GyozaServer`, `start_server`, `serve` and `SERVICE_NAMES` are importable from here. They load on
first use, so that importing a light part (`gyoza_grpc.server.config` from the CLI's parsers) does
not load the whole server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gyoza_grpc.server.grpc_server import SERVICE_NAMES, GyozaServer, serve, start_server

__all__ = ["SERVICE_NAMES", "GyozaServer", "serve", "start_server"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("gyoza_grpc.server.grpc_server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
