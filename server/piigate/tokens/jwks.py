"""Issuer signing keys, fetched and cached: the I/O edge of token verification.

`JwksCache` is one per issuer: it fetches the issuer's `jwks_uri` over HTTPS with short
timeouts, a body cap and no redirects, caches the set for its `Cache-Control: max-age`
(clamped), refetches on an unknown `kid` at most once per cooldown, shares one fetch
between concurrent callers, and keeps serving the last good set for a bounded time when
the issuer cannot be reached. Documents are parsed by the pure `piigate.tokens.keys.parse_jwks`.

Rules held by `JwksCache.key_for`:

K1. A refresh never holds a request while a set within its stale bound exists (younger
    than expiry + `stale_if_error_s`): that set answers at once and the refresh runs
    beside it, one in flight, bounded by its timeouts, counted in `fetches`. So a hung or
    slow issuer costs requests nothing until the bound.
K2. Past the stale bound the issuer fails closed at once (IssuerKeysUnavailable), with a
    refresh started beside (unless one failed within `retry_after_failure_s`); never after
    waiting for it.
K3. Only a cache that has never held a set waits for its fetch (start-up; also bounded by
    the timeouts): there is nothing else to answer with.
K4. An unknown `kid` waits for one refetch, at most once per `unknown_kid_cooldown_s`
    (counted from the last fetch attempt), and is remembered as a miss when a fetch made
    during its call confirms it. The first unknown `kid` after a start-up fetch (`prime`)
    refetches whatever the cooldown, so an issuer that rotates its key right after the
    gateway started is picked up at once.
K5. Entries `parse_jwks` skipped (symmetric or private keys, unusable keys) are counted in
    `status()` and logged by count, never by content. Neither key material nor tokens are
    logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import cachetools

from piigate.errors import IssuerKeysUnavailable
from piigate.tokens.fetch import FetchFailed, check_jwks_uri, fetch_document
from piigate.tokens.keys import (
    ASYMMETRIC_ALGORITHMS,
    MAX_KID_LENGTH,
    SKIPPED_SECRET,
    SKIPPED_UNUSABLE,
    JwksInvalid,
    KeySet,
    parse_jwks,
)
from piigate.transport.proxies import DIRECT, Proxies

log = logging.getLogger(__name__)
#: `(failure detail or None, seconds)` of one fetch (for metrics).
FetchTiming = Callable[[str | None, float], None]


@dataclass(frozen=True, slots=True)
class JwksCacheSettings:
    """How one issuer's JWKS is fetched and kept. Times in seconds."""

    default_ttl_s: float = 600.0
    min_ttl_s: float = 60.0
    max_ttl_s: float = 86_400.0
    #: After this fraction of the TTL a background refresh starts while the set is served.
    refresh_ahead_fraction: float = 0.9
    unknown_kid_cooldown_s: float = 30.0
    #: How long an unknown `kid` is remembered as a miss (no refetch for it meanwhile).
    unknown_kid_memory_s: float = 300.0
    unknown_kid_memory_size: int = 4096
    #: After a failed fetch, the next attempt waits this long (callers get stale keys or
    #: IssuerKeysUnavailable meanwhile), so a dead issuer is not hammered per request.
    retry_after_failure_s: float = 5.0
    #: How long past its expiry a set is still served while refreshes fail.
    stale_if_error_s: float = 3_600.0
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 3.0
    total_timeout_s: float = 5.0
    max_response_bytes: int = 64 * 1024
    allowed_algorithms: tuple[str, ...] = tuple(sorted(ASYMMETRIC_ALGORITHMS))
    #: The outbound proxies the environment names (HTTPS_PROXY, NO_PROXY...), read once.
    proxies: Proxies = DIRECT

    def __post_init__(self) -> None:
        numbers = (
            self.default_ttl_s,
            self.min_ttl_s,
            self.max_ttl_s,
            self.unknown_kid_cooldown_s,
            self.unknown_kid_memory_s,
            self.retry_after_failure_s,
            self.stale_if_error_s,
            self.connect_timeout_s,
            self.read_timeout_s,
            self.total_timeout_s,
        )
        if any(not math.isfinite(value) or value < 0 for value in numbers):
            raise ValueError("JWKS cache times must be finite and non-negative")
        if not 0 < self.min_ttl_s <= self.max_ttl_s:
            raise ValueError("JWKS cache needs 0 < min_ttl_s <= max_ttl_s")
        if not 0 < self.refresh_ahead_fraction <= 1:
            raise ValueError("refresh_ahead_fraction must be in (0, 1]")
        if self.max_response_bytes <= 0 or self.unknown_kid_memory_size <= 0:
            raise ValueError("JWKS cache sizes must be positive")
        if not self.allowed_algorithms or not set(self.allowed_algorithms) <= (
            ASYMMETRIC_ALGORITHMS
        ):
            raise ValueError("allowed_algorithms must be a non-empty set of asymmetric algorithms")


@dataclass(frozen=True, slots=True)
class JwksStatus:
    """For health and metrics: is the issuer's key set usable, and how fresh is it."""

    ready: bool
    stale: bool
    age_s: float | None
    key_count: int
    fetches: int
    last_error: str | None
    #: Entries of the current set's document left out (K5): symmetric or private keys...
    secret_keys_skipped: int = 0
    #: ...and keys that cannot verify under the allowed algorithms (malformed, enc, weak).
    unusable_keys_skipped: int = 0


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


def cache_ttl(cache_control: str | None, settings: JwksCacheSettings) -> float:
    """The TTL for a fetched set: `max-age` (or the default) clamped to the bounds."""
    ttl = settings.default_ttl_s
    if cache_control:
        match = _MAX_AGE.search(cache_control)
        if match:
            ttl = float(match.group(1))
        elif _NO_CACHE.search(cache_control):
            ttl = settings.min_ttl_s
    return min(max(ttl, settings.min_ttl_s), settings.max_ttl_s)


class JwksCache:
    """One issuer's signing keys, fetched from its `jwks_uri` and cached.

    `key_for(kid)` returns the current `KeySet` (the caller looks the kid up, so an
    unknown kid is the verifier's TokenKeyUnknown, not this cache's business) or raises
    IssuerKeysUnavailable when there is no set fit to serve. All times come from `clock`.
    """

    def __init__(
        self,
        jwks_uri: str,
        session: aiohttp.ClientSession,
        clock: Callable[[], float],
        settings: JwksCacheSettings | None = None,
        *,
        issuer_name: str = "",
        on_fetch: FetchTiming | None = None,
    ) -> None:
        self._url = check_jwks_uri(jwks_uri)
        self._on_fetch = on_fetch
        self._session = session
        self._clock = clock
        self._settings = settings or JwksCacheSettings()
        self._issuer_name = issuer_name
        self._keys: KeySet | None = None
        self._expires_at = -math.inf
        self._last_attempt_at = -math.inf
        self._last_failed = False
        self._last_error: str | None = None
        self._fetches = 0
        #: K4: the set came from `prime` and no unknown kid has refetched since.
        self._primed_set_unchallenged = False
        self._inflight: asyncio.Task[None] | None = None
        self._misses: cachetools.TTLCache[str, bool] = cachetools.TTLCache(
            maxsize=self._settings.unknown_kid_memory_size,
            ttl=self._settings.unknown_kid_memory_s,
            timer=clock,
        )

    @property
    def current(self) -> KeySet | None:
        """The last good key set, without fetching or checking its age."""
        return self._keys

    async def prime(self) -> KeySet:
        """Fetch the keys at start-up (and whenever readiness finds none usable); waits for
        the fetch. IssuerKeysUnavailable if it fails and no usable set remains."""
        await self._refresh()
        keys = self._keys
        if keys is None or self._clock() >= self._expires_at + self._settings.stale_if_error_s:
            raise self._unavailable()
        if not self._last_failed:
            self._primed_set_unchallenged = True
        return keys

    async def key_for(self, kid: str | None) -> KeySet:
        """The key set to verify a token naming `kid` with (rules K1-K4 above).

        Answers at once from a set within its stale bound, starting a refresh beside it
        when the set is due; fails closed at once past the bound; waits only on a cache
        that never held a set, and for the (rate-limited) refetch of an unknown `kid`.
        """
        settings = self._settings
        now = self._clock()
        fetches_before = self._fetches
        keys = self._keys
        if keys is None:  # K3
            if self._may_fetch(now):
                await self._refresh()
            keys = self._keys
            if keys is None:
                raise self._unavailable()
            now = self._clock()
        else:
            if now >= self._refresh_ahead_at() and self._may_fetch(now):
                self._start_refresh()  # K1/K2: beside, never awaited here
            if now >= self._expires_at + settings.stale_if_error_s:
                raise self._unavailable()  # K2
        if kid is None or kid in keys or len(kid) > MAX_KID_LENGTH or kid in self._misses:
            return keys
        if self._inflight is not None and not self._inflight.done():
            await asyncio.shield(self._inflight)
        elif (
            now - self._last_attempt_at >= settings.unknown_kid_cooldown_s
            or self._primed_set_unchallenged
        ):
            self._primed_set_unchallenged = False
            await self._refresh()
        keys = self._keys
        if keys is None:  # pragma: no cover - a set, once fetched, is never dropped
            raise self._unavailable()
        if kid not in keys and self._fetches > fetches_before:
            # Remembered only when a set fetched during this call confirms the miss
            # (counted, not timed: a coarse or fixed clock must not fake a fresh fetch).
            self._misses[kid] = True
        return keys

    def status(self) -> JwksStatus:
        """Readiness and freshness of the key set, for health checks and metrics."""
        now = self._clock()
        keys = self._keys
        usable = keys is not None and now < self._expires_at + self._settings.stale_if_error_s
        return JwksStatus(
            ready=usable,
            stale=keys is not None and now >= self._expires_at,
            age_s=None if keys is None else max(0.0, now - keys.fetched_at),
            key_count=0 if keys is None else len(keys),
            fetches=self._fetches,
            last_error=self._last_error,
            secret_keys_skipped=0 if keys is None else keys.skipped.get(SKIPPED_SECRET, 0),
            unusable_keys_skipped=0 if keys is None else keys.skipped.get(SKIPPED_UNUSABLE, 0),
        )

    async def settle(self) -> None:
        """Wait for the refresh in flight, if any, to finish (it never raises)."""
        task = self._inflight
        if task is not None and not task.done():
            await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel a background refresh still in flight (the session is not ours)."""
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- internals ------------------------------------------------------------------------
    def _unavailable(self) -> IssuerKeysUnavailable:
        metadata = {"issuer": self._issuer_name} if self._issuer_name else {}
        return IssuerKeysUnavailable(metadata)

    def _refresh_ahead_at(self) -> float:
        if self._keys is None:
            return -math.inf
        lifetime = self._expires_at - self._keys.fetched_at
        return self._keys.fetched_at + lifetime * self._settings.refresh_ahead_fraction

    def _may_fetch(self, now: float) -> bool:
        if self._inflight is not None and not self._inflight.done():
            return True  # joining the fetch in flight costs nothing
        if not self._last_failed:
            return True
        return now - self._last_attempt_at >= self._settings.retry_after_failure_s

    def _start_refresh(self) -> asyncio.Task[None]:
        """The fetch in flight, or a new one: concurrent callers share a single fetch."""
        if self._inflight is None or self._inflight.done():
            self._last_attempt_at = self._clock()
            self._inflight = asyncio.get_running_loop().create_task(self._fetch_and_store())
        return self._inflight

    async def _refresh(self) -> None:
        # shield: a caller that is cancelled must not cancel the fetch the others await.
        await asyncio.shield(self._start_refresh())

    async def _fetch_and_store(self) -> None:
        """One fetch; never raises, records the outcome instead (the task is shared)."""
        self._fetches += 1
        started = time.perf_counter()
        try:
            document, cache_control = await self._fetch()
            parsed = parse_jwks(document, self._settings.allowed_algorithms)
        except FetchFailed as exc:
            self._record_failure(exc.detail, started)
            return
        except JwksInvalid as exc:
            self._record_failure(f"jwks_{exc.detail}", started)
            return
        except Exception as exc:  # a shared task must not die with an unretrieved error
            self._record_failure(f"internal_{type(exc).__name__}", started)
            return
        if self._on_fetch is not None:
            self._on_fetch(None, time.perf_counter() - started)
        now = self._clock()
        self._keys = KeySet(parsed.keys, fetched_at=now, skipped=parsed.skipped)
        self._expires_at = now + cache_ttl(cache_control, self._settings)
        self._last_failed = False
        self._last_error = None
        self._misses.clear()
        secret = parsed.skipped.get(SKIPPED_SECRET, 0)
        if secret:
            log.warning(
                "JWKS entries with symmetric or private key material skipped issuer=%s "
                "count=%d (never used; the issuer should not publish them)",
                self._issuer_name,
                secret,
            )
        unusable = parsed.skipped.get(SKIPPED_UNUSABLE, 0)
        if unusable:
            log.info("JWKS unusable keys skipped issuer=%s count=%d", self._issuer_name, unusable)

    def _record_failure(self, detail: str, started: float) -> None:
        if self._on_fetch is not None:
            self._on_fetch(detail, time.perf_counter() - started)
        self._last_failed = True
        self._last_error = detail
        log.warning("JWKS fetch failed issuer=%s error=%s", self._issuer_name, detail)

    async def _fetch(self) -> tuple[bytes, str | None]:
        return await fetch_document(
            self._session, self._url, self._settings, "application/jwk-set+json, application/json"
        )
