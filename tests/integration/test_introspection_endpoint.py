"""Opaque tokens against the real dev issuer over loopback HTTP: its introspection
endpoint (RFC 7662) with both client authentication methods, revocation and expiry; and
the introspector failing closed when the endpoint is down, slow, hung, answers 500, a
redirect, garbage, too much or the wrong shape (through the fault proxy), or when
discovery fails (through the fault issuer)."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from piigate.errors import IssuerKeysUnavailable, TokenInactive, TokenTypeInvalid
from piigate.tokens.discovery import discover_endpoint
from piigate.tokens.introspection import (
    HttpIntrospectionPost,
    IntrospectionSettings,
    Introspector,
)
from piigate.tokens.jwks import JwksCacheSettings
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate_client.client_auth import ClientAuthentication, ClientSecretBasic, PrivateKeyJwt
from piigate_dev.devissuer.config import parse_issuer_config
from piigate_dev.devissuer.opaque import PREFIX
from tests.support.clientkeys import ClientKey, client_key
from tests.support.devissuer import DevIssuerHandle, IssuerRefused, running_dev_issuer
from tests.support.faultissuer import running_fault_issuer
from tests.support.faultproxy import Fault, running_fault_proxy
from tests.support.jwt_factory import rsa_keypair

PII = "https://example.com/pii_token"
SECRET = "introspect-secret"
FHIR = "https://fhir.example.com"
KEY: ClientKey = client_key("ES256", "piigate-1")


class Clock:
    """Real time plus an offset the test moves (the cache's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def issuer_config() -> Any:
    data = {"clients": [
        {"client_id": "piigate", "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest(),
         "audiences": ["*"], "scopes": ["*"]},
        {"client_id": "piigate-jwt", "jwks": [KEY.public_jwk], "audiences": ["*"],
         "scopes": ["*"]},
        {"client_id": "m2m", "secret_sha256": hashlib.sha256(b"m2m-secret").hexdigest(),
         "audiences": ["*"], "scopes": ["*"], "token_format": "opaque"},
    ]}
    return parse_issuer_config(tomllib.loads(_toml(data)), Path("."), {})


def _toml(data: dict[str, Any]) -> str:
    lines = []
    for client in data["clients"]:
        lines.append("[[clients]]")
        for name, value in client.items():
            if name == "jwks":
                members = ", ".join(f'{k} = "{v}"' for k, v in value[0].items())
                lines.append(f"jwks = [{{ {members} }}]")
            elif isinstance(value, list):
                lines.append(f"{name} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
            else:
                lines.append(f'{name} = "{value}"')
    return "\n".join(lines) + "\n"


@dataclass
class Setup:
    idp: DevIssuerHandle
    session: aiohttp.ClientSession
    clock: Clock

    def policy(self) -> IssuerPolicy:
        return IssuerPolicy(name="dev-opaque", issuer=self.idp.issuer, algorithms=("RS256",),
                            typ_rule=TypRule.ANY, max_lifetime_s=86_400)

    def introspector(self, endpoint: str | None = None, *, jwt: bool = False,
                     **settings: Any) -> Introspector:
        auth: ClientAuthentication = (
            PrivateKeyJwt(KEY.private_pem, algorithm="ES256", key_id=KEY.kid, clock=time.time)
            if jwt else ClientSecretBasic(settings.pop("secret", SECRET)))
        fields: dict[str, Any] = {
            "client_id": "piigate-jwt" if jwt else "piigate", "authentication": auth,
            "endpoint": endpoint, "timeout_s": 2.0, **settings}
        fetch = JwksCacheSettings(total_timeout_s=2.0, read_timeout_s=2.0, connect_timeout_s=1.0)

        async def discover() -> str:
            return await discover_endpoint(self.session, self.idp.issuer, fetch,
                                           "introspection_endpoint")

        return Introspector(self.policy(), IntrospectionSettings(**fields),
                            HttpIntrospectionPost(self.session), self.clock, discover=discover)

    async def opaque_token(self, **fields: Any) -> str:
        body = {"sub": "auth0|alice", "pii_token": "tok-alice", "audience": FHIR,
                "scope": "openid patient/Patient.rs", "azp": "fhir-app",
                "token_format": "opaque", **fields}
        return str((await self.idp.post_json("/dev/users/token", body))["access_token"])

    async def revoke(self, token: str) -> bool:
        return bool((await self.idp.post_json("/dev/tokens/revoke", {"token": token}))["revoked"])


@asynccontextmanager
async def setup() -> AsyncIterator[Setup]:
    async with running_dev_issuer(issuer_config()) as idp, aiohttp.ClientSession() as session:
        yield Setup(idp, session, Clock())


# --- the dev issuer's endpoint, through the real introspector -----------------------------
@pytest.mark.parametrize("jwt", [False, True], ids=["client_secret_basic", "private_key_jwt"])
async def test_an_opaque_token_verifies_through_discovered_introspection(jwt: bool) -> None:
    async with setup() as s:
        discovery = await s.idp.get_json("/.well-known/openid-configuration")
        assert discovery["introspection_endpoint"] == s.idp.base_url + "/introspect"
        assert "private_key_jwt" in discovery["introspection_endpoint_auth_methods_supported"]
        check = s.introspector(jwt=jwt)  # endpoint discovered
        await check.prime()
        token = await s.opaque_token()
        assert token.startswith(PREFIX)
        assert "." not in token
        verified = await check.verify(token)
        assert (verified.issuer_name, verified.issuer) == ("dev-opaque", s.idp.issuer)
        assert verified.subject == "auth0|alice"
        assert verified.claims[PII] == "tok-alice"
        assert verified.claims["client_id"] == "fhir-app"
        assert verified.audiences == (FHIR,)
        assert verified.jti is not None
        assert "active" not in verified.claims
        await check.verify(token)
        assert check.status().fetches == 1  # the second came from the cache


async def test_a_revoked_token_is_inactive_once_the_bound_has_passed() -> None:
    async with setup() as s:
        check = s.introspector(s.idp.base_url + "/introspect", cache_s=5)
        token = await s.opaque_token()
        await check.verify(token)
        assert await s.revoke(token)
        assert not await s.revoke(token)
        assert (await check.verify(token)).subject == "auth0|alice"  # cached
        s.clock.offset += 5.1
        with pytest.raises(TokenInactive) as caught:
            await check.verify(token)
        assert caught.value.metadata["issuer"] == "dev-opaque"


@pytest.mark.parametrize("kind", ["expired", "unknown", "jwt"])
async def test_the_issuer_answers_inactive_for_tokens_it_does_not_stand_for(kind: str) -> None:
    async with setup() as s:
        check = s.introspector(s.idp.base_url + "/introspect")
        if kind == "expired":
            token = await s.opaque_token(lifetime_s=5, iat_offset_s=-60)
        elif kind == "unknown":
            token = PREFIX + "x" * 43
        else:  # its own JWTs are verified by signature, never introspected here
            token = await s.idp.user_token(sub="auth0|alice", audience=FHIR)
        with pytest.raises(TokenInactive):
            await check.verify(token)


async def test_an_opaque_client_credentials_token_is_introspected() -> None:
    async with setup() as s:
        token = await s.idp.client_token("m2m", "m2m-secret", audience=FHIR, scope="system/x")
        assert token.startswith(PREFIX)
        verified = await s.introspector(s.idp.base_url + "/introspect").verify(token)
        assert verified.subject == "m2m@clients"
        assert verified.claims["client_id"] == "m2m"
        assert verified.claims["scope"] == "system/x"


async def test_a_wrong_secret_fails_closed() -> None:
    async with setup() as s:
        check = s.introspector(s.idp.base_url + "/introspect", secret="wrong")
        with pytest.raises(IssuerKeysUnavailable) as caught:
            await check.verify(await s.opaque_token())
        assert dict(caught.value.metadata) == {"issuer": "dev-opaque", "detail": "introspection"}
        assert check.status().last_error == "http_status_401"


async def test_the_dev_issuer_refuses_unauthenticated_and_malformed_introspection() -> None:
    async with setup() as s:
        url = s.idp.base_url + "/introspect"
        token = await s.opaque_token()

        async def post(**kwargs: Any) -> tuple[int, dict[str, Any]]:
            async with s.session.post(url, **kwargs) as response:
                return response.status, await response.json()

        assert (await post(data={"token": token}))[0] == 401
        basic = {"Authorization": aiohttp.encode_basic_auth("piigate", SECRET)}
        wrong = {"Authorization": aiohttp.encode_basic_auth("piigate", "x")}
        status, body = await post(data={"token": token}, headers=basic)
        assert (status, body["active"], body["sub"]) == (200, True, "auth0|alice")
        assert (await post(data={"token": token}, headers=wrong))[0] == 401
        status, body = await post(data={}, headers=basic)
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await post(json={"token": token}, headers=basic)
        assert (status, body["error"]) == (400, "invalid_request")
        assertion = PrivateKeyJwt(KEY.private_pem, algorithm="ES256", key_id=KEY.kid)
        _, form = assertion.authenticate("piigate-jwt", url)
        assert (await post(data={"token": token, **form}))[1]["active"] is True
        status, body = await post(data={"token": token, **form})  # the assertion, replayed
        assert (status, body["error"]) == (401, "invalid_client")
        with pytest.raises(IssuerRefused):
            await s.idp.post_json("/dev/tokens/revoke", {"token": 5})


async def test_a_refresh_token_answered_active_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async with setup() as s:
        opaque = s.idp.signer.opaque
        original = opaque.introspect
        monkeypatch.setattr(opaque, "introspect", lambda token, now: {
            **original(token, now), "token_type": "refresh_token"})
        with pytest.raises(TokenTypeInvalid):
            await s.introspector(s.idp.base_url + "/introspect").verify(await s.opaque_token())


# --- faults: every one fails closed, none is cached -----------------------------------------
_500 = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_302 = (b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n"
        b"Connection: close\r\n\r\n")
FAULTS = {
    "slow": (Fault.late(1.0), "timeout"),
    "hung": (Fault.hang(), "timeout"),
    "500": (Fault.garbage(_500), "http_status_500"),
    "redirect": (Fault.garbage(_302), "http_redirect_302"),
    "garbage": (Fault.replace_body(b"<html>oops</html>"), "not_json"),
    "oversize": (Fault.replace_body(b'{"active": true, "x": "' + b"a" * 70_000 + b'"}'),
                 "response_too_large"),
    "wrong shape": (Fault.replace_body(b'{"active": "yes"}'), "no_active_boolean"),
    "an array": (Fault.replace_body(b'[{"active": true}]'), "not_an_object"),
    "reset": (Fault.reset_mid_body(), None),
    "not http": (Fault.garbage(), None),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_an_endpoint_fault_fails_closed(name: str) -> None:
    fault, detail = FAULTS[name]
    async with setup() as s, running_fault_proxy(s.idp.base_url) as proxy:
        check = s.introspector(proxy.url + "/introspect", timeout_s=0.3)
        token = await s.opaque_token()
        proxy.fault = fault
        with pytest.raises(IssuerKeysUnavailable) as caught:
            await asyncio.wait_for(check.verify(token), 5)
        assert dict(caught.value.metadata) == {"issuer": "dev-opaque", "detail": "introspection"}
        error = check.status().last_error
        assert error is not None
        if detail is not None:
            assert error == detail
        proxy.fault = Fault()  # the endpoint recovers: nothing of the fault was kept
        assert (await check.verify(token)).subject == "auth0|alice"


async def test_a_down_endpoint_fails_closed() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with setup() as s:
        check = s.introspector(f"http://127.0.0.1:{port}/introspect")
        with pytest.raises(IssuerKeysUnavailable):
            await asyncio.wait_for(check.verify(await s.opaque_token()), 5)
        assert (check.status().last_error or "").startswith("client_")


@pytest.mark.parametrize(("mode", "detail"), [
    ("ok", "discovery_no_introspection_endpoint"),  # a JWKS-only issuer's document
    ("garbage", "discovery_not_json"),
    ("refused", "discovery_client_ClientConnectorError"),
])
async def test_discovery_faults_fail_closed(mode: str, detail: str) -> None:
    async with running_fault_issuer(rsa_keypair()) as issuer, \
            aiohttp.ClientSession() as session:
        await issuer.set_mode(mode, only="discovery")  # type: ignore[arg-type]
        policy = IssuerPolicy(name="faulty", issuer=issuer.issuer_url, algorithms=("RS256",),
                              typ_rule=TypRule.ANY)
        fetch = JwksCacheSettings(total_timeout_s=1.0, read_timeout_s=1.0, connect_timeout_s=1.0)

        async def discover() -> str:
            return await discover_endpoint(session, issuer.issuer_url, fetch,
                                           "introspection_endpoint")

        settings = IntrospectionSettings(client_id="piigate",
                                         authentication=ClientSecretBasic(SECRET))
        check = Introspector(policy, settings, HttpIntrospectionPost(session), time.time,
                             discover=discover)
        with pytest.raises(IssuerKeysUnavailable):
            await check.prime()
        assert not check.status().ready
        assert check.status().last_error == detail
        with pytest.raises(IssuerKeysUnavailable):  # backing off: not fetched again
            await check.verify("opaque-token")
        assert check.status().last_error == "discovery_backing_off"
        await check.aclose()
