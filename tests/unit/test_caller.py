"""The caller stage: one Bearer credential, verified for piigate's audience by a trusted
issuer; the caller is its client id."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from piigate.config import CallerConfig, IssuerConfig, parse_config
from piigate.errors import (
    CallerCredentialMissing,
    CallerIdentityMissing,
    TokenAudienceInvalid,
    TokenExpired,
    TokenIssuerUnknown,
)
from piigate.identity.caller import BearerCallerAuthenticator, bearer_token
from piigate.tokens.verification import VerifiedToken


class FakeVerifier:
    """Stands in for TokenVerifier: returns a fixed verification or raises."""

    def __init__(self, issuer_name: str, claims: Mapping[str, Any] | None = None,
                 error: Exception | None = None) -> None:
        self.issuer_name, self.claims, self.error = issuer_name, claims or {}, error
        self.seen: list[str] = []

    async def verify(self, token: str) -> VerifiedToken:
        self.seen.append(token)
        if self.error:
            raise self.error
        return VerifiedToken(self.issuer_name, {}, MappingProxyType(dict(self.claims)), 0.0)


def issuer(name: str, kind: str = "generic") -> IssuerConfig:
    data = {"issuers": [{"name": name, "kind": kind, "issuer": f"https://{name}.example/",
                         "jwks_uri": f"https://{name}.example/jwks"}],
            "vault": {"url": "https://vault.example"},
            "caller": {"required_scopes": ["piigate/detokenize"]},
            "profiles": {"p": {"callers": ["c"], "audiences": ["a"], "collection": "users",
                               "vault_api_key_env": "K", "fields": {"ssn": "mask"}}}}
    return parse_config(data, {"K": "k"}, Path(".")).issuers[0]


def authenticator(
    verifier: FakeVerifier, required_scopes: frozenset[str] = frozenset(), kind: str = "generic"
) -> BearerCallerAuthenticator:
    issuers = {"idp": issuer("idp", kind), "users-only-idp": issuer("users-only-idp")}
    caller = CallerConfig(audience="piigate", issuers=("idp",), required_scopes=required_scopes)
    return BearerCallerAuthenticator(verifier, caller, issuers)  # type: ignore[arg-type]


def test_no_authorization_entry_is_no_bearer_credential() -> None:
    assert bearer_token((("x-other", "v"),)) is None


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer a"), ("authorization", "Bearer b")),
    ],
)
def test_exactly_one_bearer_credential(metadata: tuple[tuple[str, Any], ...]) -> None:
    with pytest.raises(CallerCredentialMissing):
        bearer_token(metadata)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token((("authorization", "bearer abc.def.ghi"),)) == "abc.def.ghi"


async def test_client_id_from_the_first_configured_claim() -> None:
    verifier = FakeVerifier("idp", {"aud": "piigate", "client_id": "c-2", "cid": "c-3"})
    caller = await authenticator(verifier).identify((("authorization", "Bearer tok"),), None)
    assert (caller.client_id, caller.issuer_name) == ("c-2", "idp")
    assert verifier.seen == ["tok"]


async def test_token_for_another_audience_is_not_a_caller_credential() -> None:
    verifier = FakeVerifier("idp", {"aud": ("https://api", "other"), "azp": "c"})
    with pytest.raises(TokenAudienceInvalid) as caught:
        await authenticator(verifier).identify((("authorization", "Bearer t"),), None)
    assert caught.value.metadata["token_role"] == "caller"


async def test_issuer_not_trusted_for_callers() -> None:
    verifier = FakeVerifier("users-only-idp", {"aud": "piigate", "azp": "c"})
    with pytest.raises(TokenIssuerUnknown):
        await authenticator(verifier).identify((("authorization", "Bearer t"),), None)


async def test_verification_failures_carry_the_caller_role() -> None:
    verifier = FakeVerifier("idp", error=TokenExpired())
    with pytest.raises(TokenExpired) as caught:
        await authenticator(verifier).identify((("authorization", "Bearer t"),), None)
    assert caught.value.metadata == {"token_role": "caller"}


async def test_no_client_id_claim() -> None:
    verifier = FakeVerifier("idp", {"aud": "piigate", "azp": ""})
    with pytest.raises(CallerIdentityMissing):
        await authenticator(verifier).identify((("authorization", "Bearer t"),), None)


async def test_required_scope_binds_audience_less_tokens_to_piigate() -> None:
    # Cognito client-credentials tokens carry no aud; a scope granted only to piigate's
    # callers takes its place.
    granted = FakeVerifier("idp", {"client_id": "svc", "scope": "piigate/detokenize"})
    caller = await authenticator(granted, frozenset({"piigate/detokenize"}), "cognito").identify(
        (("authorization", "Bearer t"),), None)
    assert caller.client_id == "svc"
    lacking = FakeVerifier("idp", {"client_id": "svc", "scope": "other/read"})
    with pytest.raises(TokenAudienceInvalid) as caught:
        await authenticator(lacking, frozenset({"piigate/detokenize"}), "cognito").identify(
            (("authorization", "Bearer t"),), None)
    assert caught.value.metadata["missing_scope"] == "piigate/detokenize"
