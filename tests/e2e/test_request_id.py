"""The request id a caller is given is the one its audit event holds: in the
`piigate-request-id` trailer of every answer, in each disclosed response, and in the
metadata of every ErrorInfo (a batch item's is the item's own), through the real gateway
on loopback and through the Python client."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from piigate_client import Detokenized
from piigate_client.errors import PiigateError
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from tests.support.stack import Stack, running_stack

TRAILER = "piigate-request-id"


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    (detail,) = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    info = error_details_pb2.ErrorInfo()
    detail.Unpack(info)
    return info


def trailer(metadata: Any) -> str:
    (value,) = [v for k, v in metadata or () if k == TRAILER]
    return str(value)


async def raw(stack: Stack, credential: str) -> tuple[grpc.aio.Channel, Any]:
    channel = grpc.aio.insecure_channel(stack.target)
    return channel, pb_grpc.DetokenizationServiceStub(channel)  # type: ignore[no-untyped-call]


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_a_disclosure_and_a_refusal_name_their_audit_event() -> None:
    async with running_stack() as stack:
        token = await stack.caller_token("support-tool")
        channel, stub = await raw(stack, token)
        async with channel:
            call = stub.Detokenize(pb.DetokenizeRequest(subject_token=stack.user_token("alice")),
                                   metadata=auth(token), timeout=5)
            response = await call
            allowed_trailer = trailer(await call.trailing_metadata())
            expired = stack.user_token("bob", lifetime_s=60, iat_offset_s=-600)
            call = stub.Detokenize(pb.DetokenizeRequest(subject_token=expired),
                                   metadata=auth(token), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            stranger = stub.Detokenize(pb.DetokenizeRequest(subject_token="x"),
                                       metadata=auth("not-a-caller-token"), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as unknown_caller:
                await stranger
        events = stack.audit_events()
    assert [e["outcome"] for e in events] == ["allowed", "denied", "denied"]
    assert response.request_id == allowed_trailer == events[0]["request_id"]
    for caught, event in ((refused.value, events[1]), (unknown_caller.value, events[2])):
        status = status_pb2.Status.FromString(
            dict(caught.trailing_metadata())["grpc-status-details-bin"])
        info = error_info(status)
        assert info.reason == event["error_reason"]
        assert info.metadata["request_id"] == trailer(caught.trailing_metadata())
        assert info.metadata["request_id"] == event["request_id"]
    assert len({e["request_id"] for e in events}) == 3


async def test_a_batch_names_the_call_and_each_item() -> None:
    async with running_stack() as stack:
        token = await stack.caller_token("support-tool")
        channel, stub = await raw(stack, token)
        async with channel:
            call = stub.BatchDetokenize(pb.BatchDetokenizeRequest(subject_tokens=[
                stack.user_token("alice"), "not-a-jwt", stack.user_token("bob")]),
                metadata=auth(token), timeout=5)
            response = await call
            batch_trailer = trailer(await call.trailing_metadata())
        events = stack.audit_events()
    assert {e["batch_id"] for e in events} == {batch_trailer}
    ids = [r.response.request_id if r.status.code == 0 else error_info(r.status).metadata[
        "request_id"] for r in response.results]
    assert ids == [e["request_id"] for e in events]
    assert batch_trailer not in ids  # the call's id is its own; each item has one too


async def test_the_python_client_exposes_the_request_id() -> None:
    async with running_stack() as stack:
        support = await stack.caller("support-tool")
        allowed = await support.detokenize(stack.user_token("alice"))
        with pytest.raises(PiigateError) as refused:
            await support.detokenize("not-a-jwt")
        items = await support.detokenize_many([stack.user_token("bob"), "not-a-jwt"])
        events = stack.audit_events()
    assert allowed.request_id == events[0]["request_id"]
    assert refused.value.request_id == events[1]["request_id"]
    assert refused.value.request_id in str(refused.value)
    assert isinstance(items[0], Detokenized)
    assert isinstance(items[1], PiigateError)
    assert [items[0].request_id, items[1].request_id] == [e["request_id"] for e in events[2:]]
