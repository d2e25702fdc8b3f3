"""One-time subject tokens: a profile with `one_time_tokens = true` refuses a token whose
`jti` it has seen before (RFC 7519 §4.1.7).

Seen ids are remembered per issuer until the token's `exp`, when a replay would fail
verification anyway. Memory is bounded; when it is full of unexpired ids, new tokens are
refused (fail closed) rather than forgetting an id that could then be replayed. Each
gateway process remembers its own ids: with several workers, pin a one-time caller to one
process or accept that a replay could land on another process.
"""

from __future__ import annotations

from collections.abc import Callable

import cachetools

from piigate.errors import ReplayGuardFull, TokenReplayed

DEFAULT_MAX_ENTRIES = 100_000


class ReplayGuard:
    """Remembers (issuer, jti) pairs until their token expires."""

    def __init__(
        self, clock: Callable[[], float], max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._seen: cachetools.TLRUCache[tuple[str, str], float] = cachetools.TLRUCache(
            maxsize=max_entries, ttu=lambda _key, expires_at, _now: expires_at, timer=clock
        )

    def first_use(self, issuer: str, jti: str, expires_at: float) -> None:
        """Record this use; raise TokenReplayed if the id was used before."""
        key = (issuer, jti)
        if key in self._seen:
            raise TokenReplayed({"token_role": "subject"})
        self._seen.expire()
        if len(self._seen) >= self._seen.maxsize:
            raise ReplayGuardFull()
        self._seen[key] = expires_at

    def __len__(self) -> int:
        return len(self._seen)
