"""Stage 1: who is calling.

The calling service proves itself with its own OAuth client-credentials access token in
the `authorization: Bearer ...` metadata. It is verified like any token, must be issued
for piigate's own audience by an issuer trusted for callers, and the caller's identity
is its client id (`azp`, `client_id` or `cid`, whichever the issuer's config names
first). Client-certificate identity (mTLS) slots in as another `CallerAuthenticator`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from piigate.errors import (
    CallerCredentialMissing,
    CallerIdentityMissing,
    TokenAudienceInvalid,
    TokenIssuerUnknown,
    TokenRejected,
)
from piigate.tokens import TokenVerifier
from piigate.verification import VerifiedToken

CALLER_ROLE = "caller"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated calling service."""

    client_id: str
    issuer_name: str


class CallerAuthenticator(Protocol):
    """Identifies the calling service from the call's metadata."""

    async def identify(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller: ...


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    """The token of the single `authorization: Bearer` entry; several entries are refused
    so a proxy cannot smuggle a second credential past the first."""
    values = [v for k, v in metadata if k == "authorization"]
    if len(values) != 1 or not isinstance(values[0], str):
        raise CallerCredentialMissing()
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CallerCredentialMissing()
    return token.strip()


class BearerCallerAuthenticator:
    """Authenticates callers by their client-credentials access token."""

    def __init__(
        self,
        verifier: TokenVerifier,
        audience: str,
        trusted_issuers: frozenset[str],
        client_id_claims: Mapping[str, Sequence[str]],
    ) -> None:
        self._verifier = verifier
        self._audience = audience
        self._trusted_issuers = trusted_issuers
        self._client_id_claims = client_id_claims

    async def identify(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller:
        token = bearer_token(metadata)
        try:
            verified = await self._verifier.verify(token)
            if verified.issuer_name not in self._trusted_issuers:
                raise TokenIssuerUnknown()
            if self._audience not in verified.audiences:
                raise TokenAudienceInvalid()
        except TokenRejected as exc:
            raise exc.for_role(CALLER_ROLE) from exc
        return Caller(self._client_id(verified), verified.issuer_name)

    def _client_id(self, verified: VerifiedToken) -> str:
        for claim in self._client_id_claims.get(verified.issuer_name, ()):
            value = verified.claims.get(claim)
            if isinstance(value, str) and value:
                return value
        raise CallerIdentityMissing()
