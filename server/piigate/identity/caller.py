"""Stage 1: who is calling.

A calling service proves itself in one or both of two ways:

- its own OAuth client-credentials access token in the `authorization: Bearer ...`
  metadata, verified like any token, issued for piigate's own audience by an issuer
  trusted for callers; its identity is its client id (`azp`, `client_id` or `cid`,
  whichever the issuer's config names first);
- a client certificate verified by mutual TLS; its identity is the leaf's exact SPIFFE
  ID or SANs (`piigate.identity.peer`).

Which of them a caller must present is the profile's business (stage 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from piigate.config import CallerConfig, IssuerConfig
from piigate.errors import (
    CallerCredentialMissing,
    CallerIdentityMissing,
    TokenAudienceInvalid,
    TokenIssuerUnknown,
    TokenRejected,
)
from piigate.identity.peer import PeerIdentity
from piigate.tokens.claims import claim_values, granted_scopes
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier

CALLER_ROLE = "caller"


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated calling service: its client id (when it sent a bearer token)
    and its certificate identity (when it connected with mutual TLS)."""

    client_id: str | None
    issuer_name: str | None
    peer: PeerIdentity | None = None


class CallerAuthenticator(Protocol):
    """Identifies the calling service from the call's metadata."""

    async def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: PeerIdentity | None
    ) -> Caller: ...


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The token of the single `authorization: Bearer` entry, or None when there is no
    `authorization` entry; several entries are refused so a proxy cannot smuggle a second
    credential past the first."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        return None
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

    async def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: PeerIdentity | None
    ) -> Caller:
        token = bearer_token(metadata)
        if token is None:
            if peer is None:
                raise CallerCredentialMissing()
            return Caller(None, None, peer)
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
        return Caller(self._client_id(verified, issuer), verified.issuer_name, peer)

    @staticmethod
    def _client_id(verified: VerifiedToken, issuer: IssuerConfig) -> str:
        for claim in issuer.client_id_claims:
            value = verified.claims.get(claim)
            if isinstance(value, str) and value:
                return value
        raise CallerIdentityMissing()

