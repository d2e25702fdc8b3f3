"""Opaque access tokens: random references whose claims the issuer keeps, the kind many
EHR authorization servers hand out instead of JWTs. A resource server learns what one
means only by asking (RFC 7662 introspection); revoking one makes it inactive at once.

`OpaqueTokens` is the store: `issue(claims)` returns a fresh token (`PREFIX` + 256
random bits, base64url), `introspect(token, now)` the RFC 7662 §2.2 answer and
`revoke(token)` ends it. Rules:

1. Tokens are kept under their SHA-256, never as text: the store cannot leak them.
2. The answer for an unknown, expired or revoked token is `{"active": false}` and
   nothing else (§2.2: no hint of which).
3. An active answer holds the token's claims (`iss`, `sub`, `aud`, `scope`, `iat`,
   `exp`, `jti`, the vault-token claim, launch context...) with `active: true`,
   `token_type: Bearer` and `client_id` (the `azp` of a user token).
4. Bounded: expired and revoked entries go first; when the store is full of live
   tokens the oldest is dropped (development tooling: a dropped token answers inactive,
   never another's claims).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

PREFIX = "devat_"
DEFAULT_CAPACITY = 100_000


class OpaqueTokens:
    """The issuer's opaque tokens and their claims (rules 1-4 above)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._tokens: dict[bytes, dict[str, Any]] = {}  # insertion order = age

    def issue(self, claims: Mapping[str, Any], now: float) -> str:
        """A new token standing for `claims` (which must hold a numeric `exp`)."""
        if not isinstance(claims.get("exp"), int | float):
            raise ValueError("an opaque token's claims need an exp")
        if len(self._tokens) >= self._capacity:
            self._tokens = {k: v for k, v in self._tokens.items() if v["exp"] > now}
            while len(self._tokens) >= self._capacity:
                del self._tokens[next(iter(self._tokens))]
        token = PREFIX + secrets.token_urlsafe(32)
        self._tokens[_key(token)] = dict(claims)
        return token

    def introspect(self, token: str, now: float) -> dict[str, Any]:
        """The RFC 7662 answer for `token` at time `now`."""
        claims = self._tokens.get(_key(token))
        if claims is None or claims["exp"] <= now:
            return {"active": False}
        answer: dict[str, Any] = {"active": True, **claims, "token_type": "Bearer"}
        if "client_id" not in answer and isinstance(claims.get("azp"), str):
            answer["client_id"] = claims["azp"]
        return answer

    def revoke(self, token: str) -> bool:
        """End the token; whether it was one of ours (and not already revoked)."""
        return self._tokens.pop(_key(token), None) is not None

    def __len__(self) -> int:
        return len(self._tokens)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
