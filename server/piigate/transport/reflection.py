"""Server reflection under both names: `grpc.reflection.v1.ServerReflection` (the stable
one newer grpcurl, Postman and grpcui ask first) and `grpc.reflection.v1alpha` (what
older tools know).

grpcio-reflection ships only v1alpha. The v1 protocol is the same protocol renamed:
grpc/reflection/v1/reflection.proto has the same messages with the same field numbers and
types, only the package differs. So v1 is served by the library's own servicer with its
v1alpha messages doing the (identical) wire encoding, and v1's descriptor (v1alpha's,
renamed) is added to the descriptor pool once, so reflection can describe itself under
both names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _v1_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's file descriptor with its package renamed to v1 (and not deprecated)."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    file.name, file.package = _V1_FILE, _V1_PACKAGE
    file.options.Clear()
    file.options.java_package = "io.grpc.reflection.v1"
    file.options.java_outer_classname = "ServerReflectionProto"
    file.options.java_multiple_files = True
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"

    def rename(type_name: str) -> str:
        return type_name.replace(f".{_V1ALPHA_PACKAGE}.", f".{_V1_PACKAGE}.", 1)

    for message in file.message_type:
        for message_field in message.field:
            if message_field.type_name:
                message_field.type_name = rename(message_field.type_name)
    for service in file.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    return file


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_descriptor().SerializeToString())


_register_v1_descriptor()  # once per process: the pool is process-wide


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Serve reflection v1 and v1alpha on `server` for `service_names` (and themselves)."""
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    servicer: Any = reflection.ReflectionServicer(names)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
