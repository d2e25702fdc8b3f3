"""One-time subject tokens: a profile with `one_time_tokens = true` refuses a token whose
`jti` it has seen before (RFC 7519 §4.1.7).

Seen ids are remembered per issuer until the time the caller gives (`exp` plus the
largest leeway, `piigate.limits.abuse`), when a replay would fail verification anyway.
Memory is bounded; when it is full of unexpired ids, new tokens are refused (fail closed)
rather than forgetting an id that could then be replayed. This is the memory store's:
each process remembers its own ids, so with several workers or replicas a replay could
land on another process unless `[state] backend = "redis"` shares them
(`piigate.limits.redis_store`).
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
