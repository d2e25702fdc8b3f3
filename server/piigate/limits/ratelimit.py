"""Abuse limits, pure: request rates per caller, per subject and per actor, and a cap on
how many distinct subjects one caller (or actor) reaches.

No I/O and no clock of its own: every decision takes `now`, seconds on a monotonic clock
(`time.monotonic()` in production, a plain float in tests). Invariants:

1. `now` never goes backwards for one limiter. If it does, no time is credited (a bucket
   does not refill, a window does not slide) rather than time being invented.
2. Memory is bounded by configured key counts. Entries are dropped first when dropping
   them loses nothing (a bucket idle long enough to be full again, a caller whose window
   is empty); only when a cache is full of live entries is the least recently used one
   evicted, which forgets its history: size the caches above the number of live keys.
3. Subjects are identified by a keyed hash (`hash_subject`), never by `iss`/`sub`
   themselves, so these tables hold no identifiers that could be read back.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from cachetools import TTLCache

# (profile name, caller id), (profile name, subject hash) or (profile name, actor hash).
LimitKey = tuple[str, str]
LimitName = Literal["caller", "subject", "actor"]


def hash_subject(issuer: str, subject: str, secret: bytes) -> str:
    """A keyed hash naming one subject (`iss` + `sub`) without revealing it.

    Keyed (HMAC-SHA-256) because subject ids are often guessable (e-mail addresses,
    sequence numbers): a plain hash could be reversed by trying them. `secret` can be
    random per process; limits are in memory only.
    """
    # The issuer is length-prefixed so ("a", "bc") and ("ab", "c") never collide.
    message = f"{len(issuer)}:{issuer}{subject}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class TokenBucket:
    """A token bucket: `burst` tokens at most, refilled at `rate_per_s` tokens a second.

    It starts full, so a new key may make `burst` requests at once.
    """

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if not rate_per_s > 0:
            raise ValueError("rate_per_s must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated: float | None = None

    @property
    def full_after_s(self) -> float:
        """Seconds an empty bucket takes to fill up: idle that long, it is as new."""
        return self._burst / self._rate

    def wait(self, now: float) -> float | None:
        """None if a token is available at `now`, else seconds until one is. Takes none."""
        self._refill(now)
        if self._tokens >= 1.0:
            return None
        return (1.0 - self._tokens) / self._rate

    def take(self, now: float) -> float | None:
        """Take one token: None if allowed, else seconds until a token is available
        (for `RetryInfo`); a refused call takes nothing."""
        wait = self.wait(now)
        if wait is None:
            self._tokens -= 1.0
        return wait

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            elapsed = now - self._updated
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._updated is None or now > self._updated:
            self._updated = now


@dataclass(frozen=True, slots=True)
class Rate:
    """A limit: `per_s` requests a second on average, up to `burst` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        TokenBucket(self.per_s, self.burst)  # the same validation, one place


@dataclass(frozen=True, slots=True)
class Decision:
    """A rate decision. When refused, `limit` names the limit that refused and
    `retry_after_s` is when the request would be allowed (the later of the two limits)."""

    allowed: bool
    limit: LimitName | None = None
    retry_after_s: float = 0.0


ALLOWED = Decision(allowed=True)


class _Clock:
    """The `now` of the call in progress, as a timer for cachetools' TTL caches."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = float("-inf")

    def advance(self, now: float) -> None:
        self.now = max(self.now, now)  # invariant 1: never backwards

    def __call__(self) -> float:
        return self.now


class RateLimiter:
    """Token buckets per (profile, caller), per (profile, subject) and, when an `actor`
    rate is given and a request names an actor, per (profile, actor).

    A request is allowed only if each of its buckets has a token, and then takes one from
    each; a refused request takes from none, so one limit does not drain another.
    """

    def __init__(self, caller: Rate, subject: Rate, max_keys: int = 100_000,
                 actor: Rate | None = None) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._rates: dict[LimitName, Rate] = {"caller": caller, "subject": subject}
        if actor is not None:
            self._rates["actor"] = actor
        self._clock = _Clock()
        # A bucket untouched for `full_after_s` is full again: expiring it then is lossless.
        self._buckets: dict[LimitName, TTLCache[LimitKey, TokenBucket, float]] = {
            name: TTLCache(max_keys, rate.burst / rate.per_s, timer=self._clock)
            for name, rate in self._rates.items()
        }

    def check(self, caller_key: LimitKey, subject_key: LimitKey, now: float,
              actor_key: LimitKey | None = None) -> Decision:
        """Decide one request by `caller_key` (and `actor_key`, acting for the subject)
        about `subject_key` at `now`."""
        self._clock.advance(now)
        keyed: tuple[tuple[LimitName, LimitKey, TokenBucket], ...] = (
            ("caller", caller_key, self._bucket("caller", caller_key)),
            ("subject", subject_key, self._bucket("subject", subject_key)),
        )
        if actor_key is not None and "actor" in self._rates:
            keyed += (("actor", actor_key, self._bucket("actor", actor_key)),)
        refusals = [(wait, name) for name, _, bucket in keyed
                    if (wait := bucket.wait(now)) is not None]
        if refusals:
            # Retrying before the latest of the waits would be refused again.
            wait, name = max(refusals)
            return Decision(allowed=False, limit=name, retry_after_s=wait)
        for name, key, bucket in keyed:
            bucket.take(now)
            # Re-inserting restarts the entry's TTL: it expires only once idle and full.
            self._buckets[name][key] = bucket
        return ALLOWED

    def tracked_keys(self) -> dict[LimitName, int]:
        """How many keys each limit holds now (for tests and gauges)."""
        for cache in self._buckets.values():
            cache.expire()
        return {name: len(cache) for name, cache in self._buckets.items()}

    def _bucket(self, name: LimitName, key: LimitKey) -> TokenBucket:
        bucket = self._buckets[name].get(key)
        if bucket is None:
            rate = self._rates[name]
            bucket = TokenBucket(rate.per_s, rate.burst)
        return bucket


class DistinctSubjectWindow:
    """Per caller, the distinct subjects seen in a sliding window, capped.

    Sliding, not fixed buckets: a subject counts while it was last seen less than
    `window_s` ago, so a harvest cannot double its yield by straddling a bucket boundary.
    A subject seen again is not new and is always allowed; a new subject beyond
    `max_subjects` is refused and not recorded (it was not disclosed), so each caller holds
    at most `max_subjects` entries and at most `max_callers` callers are tracked.
    """

    def __init__(self, max_subjects: int, window_s: float, max_callers: int = 10_000) -> None:
        if max_subjects < 1:
            raise ValueError("max_subjects must be at least 1")
        if not window_s > 0:
            raise ValueError("window_s must be positive")
        if max_callers < 1:
            raise ValueError("max_callers must be at least 1")
        self._max = max_subjects
        self._window = window_s
        self._clock = _Clock()
        # A caller idle for a whole window has an empty window: expiring it is lossless.
        self._callers: TTLCache[LimitKey, OrderedDict[str, float], float] = TTLCache(
            max_callers, window_s, timer=self._clock
        )

    def observe(self, caller: LimitKey, subject_hash: str, now: float) -> bool:
        """Record that `caller` reaches `subject_hash` at `now`. False: a new subject over
        the cap, harvesting suspected (the subject is not recorded)."""
        self._clock.advance(now)
        seen = self._callers.get(caller)
        if seen is None:
            seen = OrderedDict()
        # Oldest last-seen first (kept so by move_to_end), so expiry stops at the first
        # subject still inside the window.
        while seen and next(iter(seen.values())) <= now - self._window:
            seen.popitem(last=False)
        if subject_hash in seen:
            seen[subject_hash] = max(seen[subject_hash], now)
            seen.move_to_end(subject_hash)
        elif len(seen) < self._max:
            seen[subject_hash] = now
        else:
            return False
        self._callers[caller] = seen  # restarts the caller's TTL
        return True

    def distinct_subjects(self, caller: LimitKey, now: float) -> int:
        """How many distinct subjects `caller` reached within the window ending at `now`."""
        seen = self._callers.get(caller)
        if seen is None:
            return 0
        return sum(1 for last in seen.values() if last > now - self._window)

    def tracked_callers(self) -> int:
        """How many callers are held now (for tests and gauges)."""
        self._callers.expire()
        return len(self._callers)
