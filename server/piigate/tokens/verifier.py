"""The token stage's async glue: choose the issuer, get its keys, verify, remember.

`TokenVerifier.verify(token, accept_opaque=False)`:

0. only with `accept_opaque` (subject tokens; a caller's credential is always a JWT, so
   an unauthenticated peer can never make piigate call an introspection endpoint) and
   opaque issuers configured: `OpaqueRoutes.route` picks the opaque issuer by token
   prefix (or the one without a prefix, for a token that is not JWT-shaped while JWT
   issuers exist) and that issuer's `Introspector` answers (`piigate.tokens.introspection`);
   a token no opaque issuer takes goes on as a JWT. With no opaque issuers, or for a
   caller's credential, this step is one attribute test: the JWT path is unchanged;
1. `jws.peek` the unverified `iss` and `kid` (size and structure checked first);
2. select the issuer whose configured `iss` is EXACTLY that string (else
   TokenIssuerUnknown; nothing is fetched for an unknown issuer);
3. `await` that issuer's key source for the kid (JWKS cache; IssuerKeysUnavailable);
4. run the pure `verification.verify` with `now = clock()`.

A verified token is remembered under the SHA-256 of its bytes so a repeated token is
verified once. A remembered entry:
- expires at the token's `exp` (never later, leeway not included);
- is used only while the issuer's current key set still holds the same key material under
  the same kid (a key removed from the JWKS revokes its cached tokens on the next use);
- has its time checks (exp, nbf, iat, age) re-run on every use, so a cache hit can never
  accept what a full verification would refuse now: the other claim checks (issuer, type,
  types, audience) depend only on the token and the frozen policy, so their verdict cannot
  change; only the signature and those are skipped.
Failures are not remembered. The cache is bounded (LRU beyond `cache_size`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import cachetools

from piigate.errors import TokenIssuerUnknown, TokenRejected
from piigate.tokens.introspection import Introspector, OpaqueRoutes
from piigate.tokens.jws import peek, select_key
from piigate.tokens.keys import KeySet
from piigate.tokens.verification import (
    ClaimDates,
    IssuerPolicy,
    VerifiedToken,
    check_times,
    claim_dates,
    verify,
)

DEFAULT_CACHE_SIZE = 10_000


class KeySource(Protocol):
    """Where an issuer's current keys come from (`piigate.tokens.jwks.JwksCache`, or a fake)."""

    async def key_for(self, kid: str | None) -> KeySet:
        """The key set to verify a token naming `kid` with (IssuerKeysUnavailable if none)."""
        ...


@dataclass(frozen=True, slots=True)
class _Remembered:
    token: VerifiedToken
    dates: ClaimDates
    issuer: str
    kid: str | None
    fingerprint: bytes


class TokenVerifier:
    """Verifies JWT access tokens of the configured issuers."""

    def __init__(
        self,
        issuers: Mapping[str, tuple[IssuerPolicy, KeySource]],
        clock: Callable[[], float],
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        opaque: Sequence[Introspector] = (),
    ) -> None:
        """`issuers` maps each exact `iss` string to its policy and key source; `opaque`
        holds the opaque issuers' introspectors."""
        if not issuers and not opaque:
            raise ValueError("at least one issuer is required")
        for issuer, (policy, _) in issuers.items():
            if issuer != policy.issuer:
                raise ValueError(f"issuer {policy.name!r} is registered under another iss")
        self._issuers = dict(issuers)
        self._clock = clock
        self._max_bytes = max(
            [policy.max_token_bytes for policy, _ in issuers.values()]
            + [introspector.policy.max_token_bytes for introspector in opaque]
        )
        self._routes = OpaqueRoutes(opaque, jwt_issuers=bool(issuers)) if opaque else None
        self._remembered: cachetools.TLRUCache[bytes, _Remembered] = cachetools.TLRUCache(
            maxsize=cache_size,
            ttu=lambda _digest, entry, _now: entry.token.expires_at,
            timer=clock,
        )

    async def verify(self, token: str, *, accept_opaque: bool = False) -> VerifiedToken:
        """The verified token, or a `TokenRejected` / `IssuerKeysUnavailable`; opaque
        tokens are introspected only with `accept_opaque` (step 0)."""
        digest = None
        if isinstance(token, str) and token.isascii() and len(token) <= self._max_bytes:
            digest = hashlib.sha256(token.encode("ascii")).digest()
            remembered = await self._recall(digest)
            if remembered is not None:
                return remembered
        if accept_opaque and self._routes is not None and isinstance(token, str):
            introspector = self._routes.route(token)
            if introspector is not None:
                return await introspector.verify(token, digest)

        identity = peek(token, self._max_bytes)
        trusted = self._issuers.get(identity.issuer)
        if trusted is None:
            raise TokenIssuerUnknown()
        policy, key_source = trusted
        keys = await key_source.key_for(identity.kid)
        verified = verify(token, keys, policy, self._clock())
        if digest is not None:
            key = select_key(keys, identity.kid)
            self._remembered[digest] = _Remembered(
                verified, claim_dates(verified), identity.issuer, identity.kid, key.fingerprint
            )
        return verified

    async def _recall(self, digest: bytes) -> VerifiedToken | None:
        entry = self._remembered.get(digest)
        if entry is None:
            return None
        policy, key_source = self._issuers[entry.issuer]
        keys = await key_source.key_for(entry.kid)
        try:
            current = select_key(keys, entry.kid)
        except TokenRejected:
            current = None
        if current is None or current.fingerprint != entry.fingerprint:
            self._remembered.pop(digest, None)
            return None  # the key is gone or changed: verify from scratch
        try:
            check_times(entry.dates, policy, self._clock())
        except TokenRejected as exc:
            self._remembered.pop(digest, None)
            raise type(exc)({**exc.metadata, "issuer": policy.name}) from exc
        return entry.token

    def __len__(self) -> int:
        """How many verified tokens are remembered (for metrics and tests)."""
        return len(self._remembered)
