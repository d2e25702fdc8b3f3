"""The caller stage: one Bearer credential, verified for piigate's audience by a trusted
issuer; the caller is its client id."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from piigate.caller import BearerCallerAuthenticator, bearer_token
from piigate.errors import (
    CallerCredentialMissing,
    CallerIdentityMissing,
    TokenAudienceInvalid,
    TokenExpired,
    TokenIssuerUnknown,
)
from piigate.verification import VerifiedToken


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


def authenticator(verifier: FakeVerifier) -> BearerCallerAuthenticator:
    return BearerCallerAuthenticator(
        verifier,  # type: ignore[arg-type]
        audience="piigate",
        trusted_issuers=frozenset({"idp"}),
        client_id_claims={"idp": ("azp", "client_id", "cid")},
    )


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Basic dXNlcjpwYXNz"),),
        (("authorization", "Bearer "),),
        (("authorization", "Bearer a"), ("authorization", "Bearer b")),
        (("authorization-bin", b"Bearer a"),),
    ],
)
def test_exactly_one_bearer_credential(metadata: tuple[tuple[str, Any], ...]) -> None:
    with pytest.raises(CallerCredentialMissing):
        bearer_token(metadata)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token((("authorization", "bearer abc.def.ghi"),)) == "abc.def.ghi"


async def test_client_id_from_the_first_configured_claim() -> None:
    verifier = FakeVerifier("idp", {"aud": "piigate", "client_id": "c-2", "cid": "c-3"})
    caller = await authenticator(verifier).identify((("authorization", "Bearer tok"),))
    assert (caller.client_id, caller.issuer_name) == ("c-2", "idp")
    assert verifier.seen == ["tok"]


async def test_token_for_another_audience_is_not_a_caller_credential() -> None:
    verifier = FakeVerifier("idp", {"aud": ("https://api", "other"), "azp": "c"})
    with pytest.raises(TokenAudienceInvalid) as caught:
        await authenticator(verifier).identify((("authorization", "Bearer t"),))
    assert caught.value.metadata["token_role"] == "caller"


async def test_issuer_not_trusted_for_callers() -> None:
    verifier = FakeVerifier("users-only-idp", {"aud": "piigate", "azp": "c"})
    with pytest.raises(TokenIssuerUnknown):
        await authenticator(verifier).identify((("authorization", "Bearer t"),))


async def test_verification_failures_carry_the_caller_role() -> None:
    verifier = FakeVerifier("idp", error=TokenExpired())
    with pytest.raises(TokenExpired) as caught:
        await authenticator(verifier).identify((("authorization", "Bearer t"),))
    assert caught.value.metadata == {"token_role": "caller"}


async def test_no_client_id_claim() -> None:
    verifier = FakeVerifier("idp", {"aud": "piigate", "azp": ""})
    with pytest.raises(CallerIdentityMissing):
        await authenticator(verifier).identify((("authorization", "Bearer t"),))
