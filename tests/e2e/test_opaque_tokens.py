"""Opaque subject tokens through the real gateway: a second real dev issuer ("ehr") hands
out opaque tokens and answers for them at its introspection endpoint; the gateway trusts
it with `token_format = "opaque"`. Accepted through introspection (both client
authentication methods, the endpoint configured or discovered), refused with
TOKEN_INACTIVE once revoked and the cache bound has passed, failing closed with
ISSUER_KEYS_UNAVAILABLE when the endpoint is down; every outcome audited, no token in
the trail; a caller credential is never introspected."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from piigate_client.errors import Unauthenticated, Unavailable
from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest
from piigate_dev.devissuer.config import ClientConfig, IssuerConfig
from tests.support.clientkeys import client_key
from tests.support.devissuer import DevIssuerHandle, running_dev_issuer
from tests.support.stack import Stack, running_stack

SECRET = "ehr-introspection-secret"
BOUND_S = 5


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Opaque:
    stack: Stack
    ehr: DevIssuerHandle
    clock: Clock
    introspections: list[str]

    def token(self, person: str = "alice") -> str:
        """An opaque token for a migrated person, issued by the EHR."""
        return self.ehr.signer.opaque_user_token(UserTokenRequest(
            sub=f"auth0|{person}", pii_token=self.stack.users[person].token_id,
            audience=demo.SUPPORT_AUDIENCE, scope="openid", azp="support-ui"))


def ehr_config(tmp_path: Path) -> IssuerConfig:
    key = client_key("RS256", "piigate-1")
    (tmp_path / "piigate.pem").write_bytes(key.private_pem)
    (tmp_path / "piigate.pem").chmod(0o600)
    return IssuerConfig(clients=(
        ClientConfig("piigate", hashlib.sha256(SECRET.encode()).digest(), None, None),
        ClientConfig("piigate-jwt", None, None, None,
                     (json.dumps(key.public_jwk, sort_keys=True),)),
    ))


@asynccontextmanager
async def running(tmp_path: Path, auth: str = "client_secret_basic",
                  **table: Any) -> AsyncIterator[Opaque]:
    clock = Clock()
    async with running_dev_issuer(ehr_config(tmp_path), clock) as ehr:
        issuer: dict[str, Any] = {
            "name": "ehr", "issuer": ehr.issuer, "token_format": "opaque",
            "introspection_endpoint": ehr.base_url + "/introspect",
            "introspection_cache_s": BOUND_S, **table,
        }
        if auth == "private_key_jwt":
            issuer.update(introspection_client_id="piigate-jwt", introspection_key_id="piigate-1",
                          introspection_private_key_file=str(tmp_path / "piigate.pem"))
        else:
            issuer.update(introspection_client_id="piigate",
                          introspection_client_secret_env="EHR_INTROSPECTION_SECRET")
        issuer = {k: v for k, v in issuer.items() if v is not None}
        introspections: list[str] = []
        store = ehr.signer.opaque
        answer = store.introspect

        def counted(token: str, now: float) -> dict[str, Any]:
            introspections.append(hashlib.sha256(token.encode()).hexdigest())
            return answer(token, now)

        store.introspect = counted  # type: ignore[method-assign]
        async with running_stack(clock=clock, extra_issuers=[issuer],
                                 environ_extra={"EHR_INTROSPECTION_SECRET": SECRET}) as stack:
            yield Opaque(stack, ehr, clock, introspections)


async def ready(stack: Stack) -> dict[str, Any]:
    """The readiness report once every issuer is ready (bounded)."""
    for _ in range(100):
        report = stack.gateway.readiness.report()
        if report["ready"]:
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(f"not ready: {stack.gateway.readiness.report()}")


@pytest.mark.parametrize(("auth", "discovered"), [
    ("client_secret_basic", False), ("private_key_jwt", True)])
async def test_an_opaque_subject_token_is_accepted_through_introspection(
    tmp_path: Path, auth: str, discovered: bool
) -> None:
    table = {"introspection_endpoint": None, "discovery": True} if discovered else {}
    async with running(tmp_path, auth, **table) as o:
        report = await ready(o.stack)
        assert report["issuers"]["ehr"]["ready"] is True
        support = await o.stack.caller("support-tool")
        token = o.token()
        result = await support.detokenize(token)
        assert result["ssn"].value == "***-**-1234"
        again = await support.detokenize(token)
        assert again["ssn"].value == "***-**-1234"
        assert len(o.introspections) == 1  # the second answer came from the cache
        # JWTs of the other issuer go on as before, never introspected.
        assert (await support.detokenize(o.stack.user_token("bob")))["ssn"].value \
            == "***-**-4321"
        assert len(o.introspections) == 1
        events = o.stack.audit_events()
        assert [e["outcome"] for e in events] == ["allowed"] * 3
        first = events[0]
        assert (first["subject_iss"], first["subject_sub"]) == (o.ehr.issuer, "auth0|alice")
        assert first["token_id"] == o.stack.users["alice"].token_id
        assert token not in o.stack.audit_text()


async def test_a_revoked_token_is_refused_as_inactive_after_the_cache_bound(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as o:
        support = await o.stack.caller("support-tool")
        token = o.token()
        await support.detokenize(token)
        assert o.ehr.signer.revoke(token)
        o.clock.now += BOUND_S - 1
        assert (await support.detokenize(token))["ssn"].value == "***-**-1234"  # cached
        o.clock.now += 2  # past the bound: asked again, and the issuer says inactive
        with pytest.raises(Unauthenticated) as caught:
            await support.detokenize(token)
        assert caught.value.reason == "TOKEN_INACTIVE"
        assert caught.value.metadata["token_role"] == "subject"
        assert caught.value.metadata["issuer"] == "ehr"
        assert len(o.introspections) == 2
        event = o.stack.audit_events()[-1]
        assert (event["outcome"], event["error_reason"]) == ("denied", "TOKEN_INACTIVE")
        assert token not in o.stack.audit_text()


async def test_an_unknown_opaque_token_is_inactive(tmp_path: Path) -> None:
    async with running(tmp_path) as o:
        support = await o.stack.caller("support-tool")
        with pytest.raises(Unauthenticated) as caught:
            await support.detokenize("devat_" + "A" * 43)
        assert caught.value.reason == "TOKEN_INACTIVE"


async def test_the_introspection_endpoint_down_fails_closed(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/introspect"
    async with running(tmp_path, introspection_endpoint=dead) as o:
        support = await o.stack.caller("support-tool")
        with pytest.raises(Unavailable) as caught:
            await support.detokenize(o.token())
        assert caught.value.reason == "ISSUER_KEYS_UNAVAILABLE"
        assert dict(caught.value.metadata).items() >= {
            "issuer": "ehr", "detail": "introspection"}.items()
        event = o.stack.audit_events()[-1]
        assert (event["outcome"], event["error_reason"]) == ("failed", "ISSUER_KEYS_UNAVAILABLE")
        # The JWT issuer is unaffected.
        assert (await support.detokenize(o.stack.user_token("alice")))["ssn"].value \
            == "***-**-1234"


async def test_a_caller_credential_is_never_introspected(tmp_path: Path) -> None:
    async with running(tmp_path) as o:
        opaque_caller = o.stack.client(o.token())
        with pytest.raises(Unauthenticated) as caught:
            await opaque_caller.detokenize(o.stack.user_token("alice"))
        assert caught.value.reason == "TOKEN_MALFORMED"
        assert caught.value.metadata["token_role"] == "caller"
        assert o.introspections == []
