"""Server reflection v1 (`grpc.reflection.v1.ServerReflection`) beside v1alpha, through
the real gateway. The v1 requests are encoded by hand from grpc/reflection/v1's field
numbers, so the test does not lean on the v1alpha classes the server reuses."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.support.stack import running_stack

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def _string_field(number: int, value: str) -> bytes:
    """One length-delimited protobuf field (wire type 2); values here are < 128 bytes."""
    data = value.encode()
    assert len(data) < 128
    return bytes([(number << 3) | 2, len(data)]) + data


LIST_SERVICES = _string_field(7, "")  # ServerReflectionRequest.list_services = 7


def _containing_symbol(symbol: str) -> bytes:
    return _string_field(4, symbol)  # ServerReflectionRequest.file_containing_symbol = 4


async def _ask(channel: grpc.aio.Channel, method: str, request: bytes) -> bytes:
    call = channel.stream_stream(method)

    def requests() -> Iterator[bytes]:
        yield request

    async for response in call(requests(), timeout=5):
        assert isinstance(response, bytes)
        return response
    raise AssertionError("no reflection response")


def _files(response: reflection_pb2.ServerReflectionResponse) -> dict[str, str]:
    files = {}
    for blob in response.file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(blob)
        files[file.name] = file.package
    return files


async def test_reflection_v1_lists_and_describes_the_services() -> None:
    async with running_stack() as stack, grpc.aio.insecure_channel(stack.target) as channel:
        # The response bytes are v1's; v1alpha's classes read them (same field numbers).
        listed = reflection_pb2.ServerReflectionResponse.FromString(
            await _ask(channel, V1_METHOD, LIST_SERVICES)
        )
        names = {s.name for s in listed.list_services_response.service}
        assert names == {
            "piigate.v1.DetokenizationService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
        }
        described = reflection_pb2.ServerReflectionResponse.FromString(
            await _ask(channel, V1_METHOD, _containing_symbol("piigate.v1.DetokenizationService"))
        )
        files = _files(described)
        assert files["piigate/v1/detokenization.proto"] == "piigate.v1"
        assert "google/rpc/status.proto" in files  # dependencies come along
        itself = reflection_pb2.ServerReflectionResponse.FromString(
            await _ask(channel, V1_METHOD,
                       _containing_symbol("grpc.reflection.v1.ServerReflectionRequest"))
        )
        assert _files(itself) == {"grpc/reflection/v1/reflection.proto": "grpc.reflection.v1"}
        missing = reflection_pb2.ServerReflectionResponse.FromString(
            await _ask(channel, V1_METHOD, _containing_symbol("no.such.Symbol"))
        )
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        # v1alpha still answers, for older tools.
        old = reflection_pb2.ServerReflectionResponse.FromString(
            await _ask(channel, V1ALPHA_METHOD, LIST_SERVICES)
        )
        assert {s.name for s in old.list_services_response.service} == names
