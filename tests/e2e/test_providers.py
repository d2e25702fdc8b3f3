"""Tokens shaped like each identity provider's real access tokens (per the reference
table) are accepted with their preset and refused with a mismatched one; each provider's
ID token is refused as an access token. Through the real gRPC gateway."""

from __future__ import annotations

import time
from typing import Any

import pytest

from piigate_client.errors import PiigateError
from piigate_dev import demo
from tests.support.idp import running_fake_idp
from tests.support.jwt_factory import KeyPair, make_token, rsa_keypair
from tests.support.stack import running_stack

PII = "https://example.com/pii_token"
COGNITO_APP = "4fj3kd8sl2support"  # a Cognito app client id: its tokens' "audience"


def shaped(kind: str, iss: str, token_id: str) -> tuple[dict[str, Any], str | None]:
    """(claims, header typ) of an access token as `kind` issues it."""
    now = int(time.time())
    common = {"iss": iss, "sub": "user-1", "iat": now, "exp": now + 600, "jti": "j", PII: token_id}
    if kind == "auth0":
        return {**common, "aud": [demo.SUPPORT_AUDIENCE, iss + "userinfo"], "azp": "spa",
                "scope": "openid profile", "permissions": ["read:pii"]}, "JWT"
    if kind == "keycloak":
        return {**common, "aud": [demo.SUPPORT_AUDIENCE, "account"], "azp": "support-ui",
                "typ": "Bearer", "scope": "openid"}, "JWT"
    if kind == "cognito":
        return {**common, "client_id": COGNITO_APP, "token_use": "access",
                "scope": "openid"}, None
    if kind == "okta":
        return {**common, "aud": demo.SUPPORT_AUDIENCE, "cid": "0oa1", "scp": ["openid"]}, None
    return {**common, "aud": demo.SUPPORT_AUDIENCE, "azp": "app"}, "JWT"  # frontegg


ID_TOKENS: dict[str, dict[str, Any]] = {
    "keycloak": {"typ": "ID"},
    "cognito": {"token_use": "id"},
}
PATHS = {"auth0": "/", "keycloak": "/realms/acme", "cognito": "/eu-west-1_Abc",
         "okta": "/oauth2/default", "frontegg": ""}
MISMATCH = {"auth0": "keycloak", "keycloak": "generic", "cognito": "generic",
            "okta": "cognito", "frontegg": "keycloak"}


async def call(kind: str, preset: str, key: KeyPair, changes: dict[str, Any] | None = None) -> str:
    """Run one shaped token through a gateway that trusts the provider as `preset`;
    the outcome's reason ("OK" when data came back)."""
    async with running_fake_idp(key) as idp:
        issuer = idp.issuer(PATHS[kind])
        config: dict[str, Any] = {"name": "provider", "kind": preset, "issuer": issuer}
        if preset == "generic":
            config["jwks_uri"] = issuer.rstrip("/") + "/jwks"
        overrides = {"profiles": {"support": {"audiences": [demo.SUPPORT_AUDIENCE, COGNITO_APP]}}}
        async with running_stack(extra_issuers=[config], gateway_overrides=overrides) as stack:
            claims, typ = shaped(kind, issuer, stack.users["alice"].token_id)
            claims.update(changes or {})
            token = make_token(claims, key, typ=typ)
            support = await stack.caller("support-tool")
            try:
                result = await support.detokenize(token)
            except PiigateError as exc:
                return exc.reason
            assert result["ssn"].value == "***-**-1234"
            return "OK"


@pytest.mark.parametrize("kind", list(PATHS))
async def test_provider_token_accepted_with_its_preset(kind: str) -> None:
    assert await call(kind, kind, rsa_keypair(f"{kind}-key")) == "OK"


@pytest.mark.parametrize("kind", list(PATHS))
async def test_provider_token_refused_with_a_mismatched_preset(kind: str) -> None:
    assert await call(kind, MISMATCH[kind], rsa_keypair(f"{kind}-key")) == "TOKEN_TYPE_INVALID"


@pytest.mark.parametrize("kind", list(ID_TOKENS))
async def test_provider_id_token_is_not_an_access_token(kind: str) -> None:
    reason = await call(kind, kind, rsa_keypair(f"{kind}-key"), ID_TOKENS[kind])
    assert reason == "TOKEN_TYPE_INVALID"


async def test_auth0_id_token_is_refused_by_its_audience() -> None:
    # An Auth0 ID token is typ JWT like its access tokens; its aud is the app's client id,
    # which no profile accepts as an API audience.
    reason = await call("auth0", "auth0", rsa_keypair("auth0-key"), {"aud": "spa-client-id"})
    assert reason == "AUDIENCE_NOT_ACCEPTED"
