"""Which role may call which method, derived from the service descriptors.

- admin: every method.
- reader: every Get*, List*, Count* and Watch* method of the gyoza services, found by name in
  the descriptors, so a new read RPC named so is readable and any other new RPC is
  admin-only: never open. The verb is the contract: an RPC named for reading must not write.
- worker: what a worker process calls (Heartbeat, ClaimRuns, WaitForStopOrders, AddEvent,
  GetRun, ListEvents, WatchEvents), plus the two calls the worker SDK reconciles with:
  GetWorker (what the server says it holds, read only) and ReleaseRun (hand back an ASSIGNED
  attempt that worker holds and never started). Not UpdateRun: a worker key cannot edit any
  run it likes. A name here that the descriptors do not have fails at import.
- every role: AccessService.GetCaller, which tells a key what it may do (the dashboard asks
  it to offer only the actions the server would accept).

The health check and server reflection stay open: load balancers and grpcurl need no key.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.descriptor import ServiceDescriptor

from gyoza.v1 import access_pb2, definitions_pb2, runs_pb2, topics_pb2, workers_pb2
from gyoza_grpc.domain.access import Role

GYOZA_SERVICES: tuple[ServiceDescriptor, ...] = (
    runs_pb2.DESCRIPTOR.services_by_name["RunService"],
    topics_pb2.DESCRIPTOR.services_by_name["TopicService"],
    workers_pb2.DESCRIPTOR.services_by_name["WorkerService"],
    definitions_pb2.DESCRIPTOR.services_by_name["DefinitionService"],
    access_pb2.DESCRIPTOR.services_by_name["AccessService"],
)
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
READ_PREFIXES = ("Get", "List", "Count", "Watch")


def method_path(service: ServiceDescriptor, name: str) -> str:
    """The method's path as grpc names it: /package.Service/Method."""
    return f"/{service.full_name}/{service.methods_by_name[name].name}"


def _all(services: Iterable[ServiceDescriptor]) -> frozenset[str]:
    return frozenset(method_path(s, m.name) for s in services for m in s.methods)


def _named(service: ServiceDescriptor, *names: str) -> frozenset[str]:
    return frozenset(method_path(service, name) for name in names)  # KeyError if renamed


_RUNS, _TOPICS, _WORKERS, _DEFINITIONS, _ACCESS = GYOZA_SERVICES

ALL_METHODS = _all(GYOZA_SERVICES)
READER_METHODS = frozenset(m for m in ALL_METHODS if m.rsplit("/", 1)[1].startswith(READ_PREFIXES))
WORKER_METHODS = (
    _named(_WORKERS, "Heartbeat", "ClaimRuns", "ReleaseRun", "GetWorker", "WaitForStopOrders")
    | _named(_RUNS, "AddEvent", "GetRun", "ListEvents", "WatchEvents")
    | _named(_ACCESS, "GetCaller")
)

ALLOWED: dict[Role, frozenset[str]] = {
    Role.ADMIN: ALL_METHODS,
    Role.WORKER: WORKER_METHODS,
    Role.READER: READER_METHODS,
}


def is_open(method: str) -> bool:
    """Whether `method` (/package.Service/Method) needs no key."""
    return method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES


def allows(role: Role, method: str) -> bool:
    """Whether `role` may call `method`; admin may call anything, even a method we do not know
    (the server then answers UNIMPLEMENTED)."""
    return role is Role.ADMIN or method in ALLOWED[role]
