"""Server reflection as both grpc.reflection.v1 and grpc.reflection.v1alpha.

grpcio-reflection ships v1alpha only, and newer tools (buf curl, grpcurl 1.9) ask for v1 first;
a tool that speaks only v1 failed with UNIMPLEMENTED. The v1 protocol is v1alpha's, service and
messages field for field, under another package. So v1 is served by the very same servicer:
its file descriptor is v1alpha's renamed (added to the default pool, so reflection describes
v1 itself), and its messages go on the wire with v1alpha's classes, whose encoding is the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)

_V1ALPHA_PACKAGE = v1alpha.DESCRIPTOR.package


def _renamed(type_name: str) -> str:
    prefix = f".{_V1ALPHA_PACKAGE}."
    if not type_name.startswith(prefix):
        return type_name
    return f".{V1_PACKAGE}.{type_name.removeprefix(prefix)}"


def _rename_fields(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for f in message.field:
            if f.HasField("type_name"):  # a message or enum field (proto2: only when set)
                f.type_name = _renamed(f.type_name)
        _rename_fields(message.nested_type)


def v1_file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, made from v1alpha's descriptor."""
    proto = descriptor_pb2.FileDescriptorProto()
    v1alpha.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = V1_PACKAGE
    proto.ClearField("options")  # v1alpha's Java and C# package names
    _rename_fields(proto.message_type)
    for service in proto.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type)
            method.output_type = _renamed(method.output_type)
    return proto


def _ensure_v1_in_pool(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(v1_file_descriptor().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: Any) -> None:
    """Reflection on `server` (a grpc.aio.Server, or a WrappingServer standing in for one)
    under both versions, listing `service_names` and themselves."""
    _ensure_v1_in_pool(descriptor_pool.Default())
    names = (*service_names, *SERVICE_NAMES)
    servicer = reflection.aio.ReflectionServicer(names)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=v1alpha.ServerReflectionRequest.FromString,
            response_serializer=v1alpha.ServerReflectionResponse.SerializeToString,
        )
    }
    for service in SERVICE_NAMES:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
