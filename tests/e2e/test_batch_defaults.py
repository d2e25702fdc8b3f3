"""A gateway on its default config takes a full default batch of the largest subject
tokens it accepts, and answers it within what grpc clients receive by default; a client
with more tokens than one call takes cuts them with `piigate_client.chunking`."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import grpc
import pytest

from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import start_gateway
from piigate.config.message_size import MAX_RESPONSE_BYTES
from piigate.tokens.jws import DEFAULT_MAX_TOKEN_BYTES
from piigate.transport.addresses import ListenAddress
from piigate_client import Detokenized
from piigate_client.chunking import subject_token_chunks
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from tests.support.stack import Stack, running_stack

PEOPLE = ("alice", "bob", "carol")
# Just under the gateway's 8 KiB cap: a realistic token is ~800 bytes, one stuffed with
# claims by an identity provider can approach the cap.
TARGET_BYTES = DEFAULT_MAX_TOKEN_BYTES - 64
GRPC_CLIENT_DEFAULT_RECEIVE = 4 * 1024 * 1024  # grpc core's GRPC_DEFAULT_MAX_RECV_MESSAGE_LENGTH


def large_tokens(stack: Stack, count: int) -> list[str]:
    """`count` distinct, validly signed user tokens of about TARGET_BYTES each."""
    tokens = []
    for i in range(count):
        person = PEOPLE[i % len(PEOPLE)]
        pad = 0
        token = stack.user_token(person, claims={"pad": ""})
        for _ in range(5):  # base64url grows 4/3 per byte; converges in two or three steps
            pad += (TARGET_BYTES - len(token)) * 3 // 4
            token = stack.user_token(person, claims={"pad": f"{i:04d}".ljust(pad, "x")})
        assert TARGET_BYTES - 8 <= len(token) <= DEFAULT_MAX_TOKEN_BYTES
        tokens.append(token)
    return tokens


async def batch(stack: Stack, tokens: Sequence[str], target: str | None = None
                ) -> pb.BatchDetokenizeResponse:
    """One BatchDetokenize on the raw stub, so the answer's wire size can be measured."""
    credential = await stack.caller_token("support-tool")
    async with grpc.aio.insecure_channel(target or stack.target) as channel:
        stub = pb_grpc.DetokenizationServiceStub(channel)
        response: pb.BatchDetokenizeResponse = await stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(subject_tokens=list(tokens)),
            metadata=(("authorization", f"Bearer {credential}"),), timeout=20,
        )
    return response


async def test_a_default_gateway_takes_a_full_default_batch_of_large_tokens() -> None:
    async with running_stack() as stack:
        assert stack.config.server.max_batch_size == 100  # the defaults, untouched
        tokens = large_tokens(stack, stack.config.server.max_batch_size)
        request_bytes = pb.BatchDetokenizeRequest(subject_tokens=tokens).ByteSize()
        response = await batch(stack, tokens)
    assert request_bytes > 64 * 1024  # the old default limit would have refused it
    assert request_bytes <= stack.config.server.max_request_bytes
    assert [r.status.code for r in response.results] == [0] * 100
    ssn = {f.name: f.value for f in response.results[0].response.fields}["ssn"]
    assert ssn == "***-**-1234"
    # The answer goes out under piigate's send limit and in under a client's default.
    assert response.ByteSize() <= MAX_RESPONSE_BYTES <= GRPC_CLIENT_DEFAULT_RECEIVE


async def test_what_check_config_now_refuses_is_a_refusal_without_piigate_details() -> None:
    """The old defaults, started behind the loader's back: gRPC refuses the full batch
    itself, with no ErrorInfo and no audit event (why the pair is a config problem)."""
    async with running_stack() as stack:
        tokens = large_tokens(stack, 100)
        server = dataclasses.replace(stack.config.server, max_request_bytes=64 * 1024)
        config = dataclasses.replace(stack.config, server=server)
        trail = io.BytesIO()
        old = await start_gateway(config, listen=ListenAddress("127.0.0.1", 0),
                                  audit=ChainedJsonLinesSink(trail))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await batch(stack, tokens, f"127.0.0.1:{old.port}")
        finally:
            await old.stop(grace_s=1)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "grpc-status-details-bin" not in dict(caught.value.trailing_metadata() or ())
    assert b'"outcome"' not in trail.getvalue()  # piigate never saw the call


async def test_chunking_fits_a_gateway_with_small_limits() -> None:
    overrides = {"server": {"max_batch_size": 5, "max_request_bytes": 64 * 1024}}
    async with running_stack(gateway_overrides=overrides) as stack:
        tokens = large_tokens(stack, 23)
        chunks = subject_token_chunks(tokens, max_batch_size=5, max_request_bytes=64 * 1024)
        client = await stack.caller("support-tool")
        results = []
        for chunk in chunks:
            results += await client.detokenize_many(chunk, fields=["ssn"])
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    assert all(isinstance(r, Detokenized) for r in results)
    assert [r["ssn"].value for r in results if isinstance(r, Detokenized)][:3] == [
        "***-**-1234", "***-**-4321", "***-**-9876"]
