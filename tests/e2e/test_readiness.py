"""Readiness through the real gateway: gRPC health per issuer and overall, `/healthz`,
`/metrics`, and what happens to tokens when an issuer's keys are missing or stale.

An extra `generic` issuer ("acme") is backed by the fake IdP, which the tests take down and
bring back. Waits are bounded polls; nothing here asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from piigate_client.errors import PiigateError, Unavailable
from piigate_dev import demo
from tests.support.idp import FakeIdp, running_fake_idp
from tests.support.jwt_factory import make_token, rsa_keypair
from tests.support.stack import Stack, running_stack

PII = "https://example.com/pii_token"
KEY = rsa_keypair("acme-key")
ISSUER = "acme"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OVERALL = ("", "piigate.v1.DetokenizationService")
METRICS = {"server": {"metrics_listen": "127.0.0.1:0"}}
# Long enough for the readiness loop's backoff (at most 5 s between attempts) and a
# refetch; only a hang should ever reach it.
WAIT_S = 20.0
_jti = itertools.count()


class FakeClock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def acme(idp: FakeIdp, *, discovery: bool = False, **jwks: Any) -> dict[str, Any]:
    """The extra issuer's `[[issuers]]` table, keys at an explicit `jwks_uri` or discovered."""
    table: dict[str, Any] = {"name": ISSUER, "kind": "generic", "issuer": idp.issuer("/")}
    if discovery:
        table["discovery"] = True
    else:
        table["jwks_uri"] = idp.base_url + "/jwks"
    return {**table, **jwks}


def acme_token(stack: Stack, idp: FakeIdp, now: float) -> str:
    """An access token from acme for alice's vault record, issued at `now`."""
    iat = int(now)
    claims = {"iss": idp.issuer("/"), "sub": "acme-user-1", "iat": iat, "exp": iat + 600,
              "jti": f"acme-{next(_jti)}", "aud": demo.SUPPORT_AUDIENCE, "azp": "support-ui",
              PII: stack.users["alice"].token_id}
    return make_token(claims, KEY)


async def detokenize(stack: Stack, token: str) -> str:
    """One call as the support tool (a fresh caller credential at the stack's clock);
    the reason, "OK" when alice's masked data came back."""
    support = await stack.caller("support-tool")
    try:
        result = await support.detokenize(token)
    except PiigateError as exc:
        return exc.reason
    assert result["ssn"].value == "***-**-1234"
    return "OK"


async def refused_for_missing_keys(stack: Stack, token: str) -> None:
    support = await stack.caller("support-tool")
    with pytest.raises(Unavailable) as caught:
        await support.detokenize(token)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == "ISSUER_KEYS_UNAVAILABLE"
    assert caught.value.metadata.get("issuer") == ISSUER


async def health_of(stack: Stack, *services: str) -> dict[str, int]:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answers = {}
        for service in services:
            request = health_pb2.HealthCheckRequest(service=service)
            answers[service] = (await health.Check(request, timeout=2)).status
        return answers


async def http_get(stack: Stack, path: str) -> tuple[int, str]:
    assert stack.gateway.metrics_url is not None, "server.metrics_listen did not start"
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
        stack.gateway.metrics_url + path
    ) as response:
        return response.status, await response.text()


async def healthz(stack: Stack) -> tuple[int, dict[str, Any]]:
    status, body = await http_get(stack, "/healthz")
    report: dict[str, Any] = json.loads(body)
    return status, report


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `check` until it holds, for at most WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def issuer_health_is(stack: Stack, name: str, wanted: int) -> None:
    service = f"piigate.issuer.{name}"

    async def check() -> bool:
        return (await health_of(stack, service))[service] == wanted

    name_of = health_pb2.HealthCheckResponse.ServingStatus.Name
    await eventually(check, f"{service} to be {name_of(wanted)}")


@asynccontextmanager
async def stack_with_acme(
    idp: FakeIdp, clock: Callable[[], float] = time.time, *, discovery: bool = False,
    **jwks: Any,
) -> AsyncIterator[Stack]:
    async with running_stack(
        extra_issuers=[acme(idp, discovery=discovery, **jwks)], gateway_overrides=METRICS,
        clock=clock,
    ) as stack:
        yield stack


# --- an issuer that is down at start ----------------------------------------------------
@pytest.mark.parametrize("discovery", [False, True], ids=["jwks_uri", "discovery"])
async def test_an_issuer_down_at_start_holds_readiness_until_it_comes_back(
    discovery: bool,
) -> None:
    async with running_fake_idp(KEY) as idp:
        idp.mode = "down"
        async with stack_with_acme(idp, discovery=discovery) as stack:
            assert stack.gateway.metrics_url is not None
            assert stack.gateway.metrics_url.startswith("http://127.0.0.1:")
            assert not stack.gateway.metrics_url.endswith(":0")
            # The first readiness pass primes both issuers together: once dev is in,
            # acme's attempt has failed.
            await issuer_health_is(stack, "dev", SERVING)
            health = await health_of(stack, f"piigate.issuer.{ISSUER}", *OVERALL)
            assert set(health.values()) == {NOT_SERVING}

            status, report = await healthz(stack)
            assert status == 503
            assert report["ready"] is False
            assert report["issuers"]["dev"]["ready"] is True
            missing = report["issuers"][ISSUER]
            assert missing["ready"] is False
            assert missing["keys"] == 0
            expected_error = "discovery_http_status_503" if discovery else "http_status_503"
            assert missing["last_error"] == expected_error

            token = acme_token(stack, idp, time.time())
            await refused_for_missing_keys(stack, token)
            assert await detokenize(stack, stack.user_token("alice")) == "OK"  # dev still works

            idp.mode = "ok"
            await issuer_health_is(stack, ISSUER, SERVING)
            health = await health_of(stack, f"piigate.issuer.{ISSUER}", "piigate.issuer.dev",
                                     *OVERALL)
            assert set(health.values()) == {SERVING}
            status, report = await healthz(stack)
            assert status == 200
            assert report["ready"] is True
            assert report["issuers"][ISSUER]["last_error"] is None
            assert await detokenize(stack, acme_token(stack, idp, time.time())) == "OK"


# --- stale-if-error, then fail closed ---------------------------------------------------
async def test_stale_keys_are_served_within_the_bound_then_refused() -> None:
    clock = FakeClock()
    ttl_s, stale_s = 30.0, 120.0
    async with running_fake_idp(KEY) as idp, stack_with_acme(
        idp, clock, jwks_min_ttl_s=10.0, jwks_max_ttl_s=ttl_s, jwks_stale_if_error_s=stale_s
    ) as stack:
        await issuer_health_is(stack, ISSUER, SERVING)
        assert await detokenize(stack, acme_token(stack, idp, clock.now)) == "OK"
        assert await gauge(stack, "piigate_jwks_stale", ISSUER) == 0.0

        idp.mode = "down"
        clock.advance(ttl_s + 30)  # past the TTL, well inside stale-if-error
        fetches = idp.paths.count("/jwks")
        assert await detokenize(stack, acme_token(stack, idp, clock.now)) == "OK"
        assert idp.paths.count("/jwks") > fetches  # a refresh was tried, and failed
        assert await gauge(stack, "piigate_jwks_stale", ISSUER) == 1.0
        assert await gauge(stack, "piigate_jwks_ready", ISSUER) == 1.0
        stack.gateway.readiness.publish()
        health = await health_of(stack, f"piigate.issuer.{ISSUER}", *OVERALL)
        assert set(health.values()) == {SERVING}
        status, report = await healthz(stack)
        assert status == 200
        assert report["issuers"][ISSUER]["stale"] is True
        assert report["issuers"][ISSUER]["last_error"] == "http_status_503"

        clock.advance(stale_s + 60)  # past the stale bound: fail closed
        await refused_for_missing_keys(stack, acme_token(stack, idp, clock.now))
        stack.gateway.readiness.publish()
        health = await health_of(stack, f"piigate.issuer.{ISSUER}", "piigate.issuer.dev",
                                 *OVERALL)
        assert health.pop("piigate.issuer.dev") == SERVING
        assert set(health.values()) == {NOT_SERVING}
        assert await gauge(stack, "piigate_jwks_ready", ISSUER) == 0.0
        status, report = await healthz(stack)
        assert status == 503
        assert report["issuers"][ISSUER]["ready"] is False

        idp.mode = "ok"  # and back: the readiness loop refetches the missing set
        await issuer_health_is(stack, ISSUER, SERVING)
        assert await detokenize(stack, acme_token(stack, idp, clock.now)) == "OK"


async def gauge(stack: Stack, name: str, issuer: str) -> float:
    status, text = await http_get(stack, "/metrics")
    assert status == 200
    prefix = f'{name}{{issuer="{issuer}"}} '
    values = [line.removeprefix(prefix) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, f"{prefix!r} appears {len(values)} times"
    return float(values[0])


# --- /metrics -----------------------------------------------------------------------------
async def test_metrics_count_decisions_and_never_carry_tokens_or_pii() -> None:
    async with running_fake_idp(KEY) as idp, stack_with_acme(idp) as stack:
        await issuer_health_is(stack, "dev", SERVING)
        support = await stack.caller("support-tool")
        tokens = [stack.user_token(person) for person in ("alice", "bob", "carol")]
        for token in tokens:
            await support.detokenize(token)
        billing = await stack.caller("billing-app")
        with pytest.raises(PiigateError):
            await billing.detokenize(tokens[0])

        status, text = await http_get(stack, "/metrics")
        assert status == 200
        lines = text.splitlines()
        allowed = ('piigate_decisions_total{method="Detokenize",outcome="allowed",'
                   'profile="support",reason="OK"} 3.0')
        assert allowed in lines
        assert 'piigate_jwks_ready{issuer="dev"} 1.0' in lines
        assert any(line.startswith("piigate_decisions_total{") and 'outcome="denied"' in line
                   for line in lines)

        secrets = [*tokens, await stack.caller_token("support-tool")]
        secrets += [part for token in secrets for part in token.split(".")]
        for person, record in demo.PEOPLE:
            secrets += [f"auth0|{person}", stack.users[person].token_id, *record.values()]
        secrets += ["***-**-1234", "a***@example.com"]
        leaked = [s for s in secrets if s in text]
        assert leaked == []
