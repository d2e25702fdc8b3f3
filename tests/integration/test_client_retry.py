"""The clients' retry policy (gRPC service config, set on the channel): UNAVAILABLE is
retried up to 3 attempts in all; refusals are never retried. A scripted stand-in of the
service on 127.0.0.1:0 answers each attempt with the next status and counts them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from piigate_client import AsyncDetokenizationClient
from piigate_client.client import RETRY_POLICY
from piigate_client.errors import InvalidArgument, PermissionDenied, Unavailable
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc


class ScriptedService(pb_grpc.DetokenizationServiceServicer):
    """Answers attempt n with `script[n]` (OK past the end) and counts attempts."""

    def __init__(self, script: Sequence[grpc.StatusCode]) -> None:
        self.script = list(script)
        self.attempts = 0

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        self.attempts += 1
        if self.attempts <= len(self.script):
            await context.abort(self.script[self.attempts - 1], "scripted")
        return pb.DetokenizeResponse(token_id="t-1", profile="scripted")


@asynccontextmanager
async def scripted(script: Sequence[grpc.StatusCode]) -> AsyncIterator[tuple[str, ScriptedService]]:
    server = grpc.aio.server()
    service = ScriptedService(script)
    pb_grpc.add_DetokenizationServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        await server.stop(grace=None)


U = grpc.StatusCode.UNAVAILABLE
DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("script", "attempts", "outcome"),
    [
        ([U, U], 3, None),  # two UNAVAILABLE, then OK on the third attempt
        ([U, U, U, U], 3, Unavailable),  # bounded: the third failure is the answer
        ([DENIED], 1, PermissionDenied),  # a refusal is never retried
        ([INVALID], 1, InvalidArgument),
        ([U, DENIED], 2, PermissionDenied),  # a retry that is refused stops there
    ],
)
async def test_only_unavailable_is_retried_and_boundedly(
    script: list[grpc.StatusCode], attempts: int, outcome: type[Exception] | None
) -> None:
    async with scripted(script) as (target, service), AsyncDetokenizationClient(
        target, lambda: "caller-token", timeout_s=5
    ) as client:
        if outcome is None:
            assert (await client.detokenize("subject")).profile == "scripted"
        else:
            with pytest.raises(outcome):
                await client.detokenize("subject")
    assert service.attempts == attempts


async def test_a_callers_own_service_config_replaces_the_policy() -> None:
    no_retry = {"methodConfig": [{"name": [{"service": "piigate.v1.DetokenizationService"}]}]}
    none = json.dumps(no_retry)
    async with scripted([U]) as (target, service), AsyncDetokenizationClient(
        target, None, timeout_s=5, options=[("grpc.service_config", none)]
    ) as client:
        with pytest.raises(Unavailable):
            await client.detokenize("subject")
    assert service.attempts == 1


def test_the_policy_is_the_documented_one() -> None:
    (method,) = RETRY_POLICY["methodConfig"]
    assert method["retryPolicy"] == {
        "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
    }
