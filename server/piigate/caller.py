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

from piigate.claims import claim_values, granted_scopes
from piigate.config import CallerConfig, IssuerConfig
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
        caller: CallerConfig,
        issuers: Mapping[str, IssuerConfig],
    ) -> None:
        self._verifier = verifier
        self._caller = caller
        self._issuers = {name: issuers[name] for name in caller.issuers}

    async def identify(self, metadata: Sequence[tuple[str, str | bytes]]) -> Caller:
        token = bearer_token(metadata)
        try:
            verified = await self._verifier.verify(token)
            issuer = self._issuers.get(verified.issuer_name)
            if issuer is None:
                raise TokenIssuerUnknown()
            # Bound to piigate by its audience, or (issuers whose client-credentials
            # tokens carry none, like Cognito) by a scope only piigate's callers get.
            if issuer.caller_audience_in_token and self._caller.audience not in claim_values(
                verified.claims, ("aud",)
            ):
                raise TokenAudienceInvalid()
            missing = self._caller.required_scopes - granted_scopes(
                verified.claims, issuer.scope_claims
            )
            if missing:
                raise TokenAudienceInvalid({"missing_scope": " ".join(sorted(missing))})
        except TokenRejected as exc:
            raise exc.for_role(CALLER_ROLE) from exc
        return Caller(self._client_id(verified, issuer), verified.issuer_name)

    @staticmethod
    def _client_id(verified: VerifiedToken, issuer: IssuerConfig) -> str:
        for claim in issuer.client_id_claims:
            value = verified.claims.get(claim)
            if isinstance(value, str) and value:
                return value
        raise CallerIdentityMissing()

