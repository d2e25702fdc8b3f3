"""Issuer discovery: the JWKS location (or, for an opaque-token issuer, the introspection
endpoint) from the issuer's OpenID Provider Configuration, as an alternative to
configuring `jwks_uri` (`introspection_endpoint`).

OpenID Connect Discovery 1.0 §4: the document lives at ISSUER + `/.well-known/openid-configuration`,
and its `issuer` must be exactly the configured issuer (§4.3), or it is someone else's
document. The `jwks_uri` it names must pass the same rules as a configured one (https
unless loopback). Fetching is bounded like a JWKS fetch: timeouts, size cap, no redirects.
The document is parsed strictly (`piigate.strictjson`: no duplicate members; absurd
nesting is a `not_json` failure like any other unreadable body, never an escaping
RecursionError), and every failure, whatever its kind, starts the retry back-off.
Once discovered, the location is kept and the `JwksCache` rules (K1-K5) apply: a hung
issuer never holds a request while a key set within its stale bound exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
import yarl

from piigate import strictjson
from piigate.errors import IssuerKeysUnavailable
from piigate.tokens.fetch import FetchFailed, check_jwks_uri, fetch_document
from piigate.tokens.jwks import FetchTiming, JwksCache, JwksCacheSettings, JwksStatus
from piigate.tokens.keys import KeySet

log = logging.getLogger(__name__)


class DiscoveryFailed(Exception):
    """The configuration document could not be used; `detail` is a short fixed code."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def configuration_url(issuer: str) -> yarl.URL:
    return check_jwks_uri(issuer.rstrip("/") + "/.well-known/openid-configuration")


async def discover_jwks_uri(
    session: aiohttp.ClientSession, issuer: str, settings: JwksCacheSettings
) -> str:
    """The issuer's `jwks_uri`, from its discovery document."""
    return await discover_endpoint(session, issuer, settings, "jwks_uri")


async def discover_endpoint(
    session: aiohttp.ClientSession, issuer: str, settings: JwksCacheSettings, member: str
) -> str:
    """The URL the issuer's discovery document names under `member` (`jwks_uri`,
    `introspection_endpoint`), checked like a configured one."""
    try:
        url = configuration_url(issuer)
    except ValueError as exc:
        raise DiscoveryFailed("issuer_refused") from exc
    try:
        body, _ = await fetch_document(session, url, settings, "application/json")
    except FetchFailed as exc:
        raise DiscoveryFailed(exc.detail) from exc
    try:
        document = strictjson.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: Python's json gives up on deep nesting that way (strictjson may
        # raise a ValueError subclass instead); either is an unreadable document.
        raise DiscoveryFailed("not_json") from exc
    if not isinstance(document, dict) or document.get("issuer") != issuer:
        raise DiscoveryFailed("issuer_mismatch")
    endpoint = document.get(member)
    if not isinstance(endpoint, str):
        raise DiscoveryFailed(f"no_{member}")
    try:
        check_jwks_uri(endpoint)
    except ValueError as exc:
        raise DiscoveryFailed(f"{member}_refused") from exc
    return endpoint


class DiscoveredJwks:
    """A key source that discovers its JWKS location on first use (single-flight; after a
    failure, retried no sooner than `retry_after_failure_s`, so a dead issuer is not
    asked once per request), then behaves as a `JwksCache`."""

    def __init__(
        self,
        issuer: str,
        session: aiohttp.ClientSession,
        clock: Callable[[], float],
        settings: JwksCacheSettings,
        *,
        issuer_name: str = "",
        on_fetch: FetchTiming | None = None,
        on_discovery: FetchTiming | None = None,
    ) -> None:
        configuration_url(issuer)  # refuse a plain-http non-loopback issuer at start-up
        self._on_fetch = on_fetch  # the JWKS fetches, once discovered
        self._on_discovery = on_discovery
        self._issuer = issuer
        self._session = session
        self._clock = clock
        self._settings = settings
        self._issuer_name = issuer_name
        self._cache: JwksCache | None = None
        self._discovering: asyncio.Task[JwksCache] | None = None
        self._last_error: str | None = None
        self._failed_at: float | None = None
        self._reported: asyncio.Task[JwksCache] | None = None

    async def _ready_cache(self) -> JwksCache:
        if self._cache is not None:
            return self._cache
        if self._discovering is None or self._discovering.done():
            backing_off = (
                self._failed_at is not None
                and self._clock() - self._failed_at < self._settings.retry_after_failure_s
            )
            if backing_off:
                raise IssuerKeysUnavailable({"issuer": self._issuer_name})
            self._discovering = asyncio.create_task(self._discover())
        task = self._discovering
        try:
            self._cache = await asyncio.shield(task)
        except Exception as exc:  # any failure, typed or not, backs off the same way
            detail = exc.detail if isinstance(exc, DiscoveryFailed) else (
                f"internal_{type(exc).__name__}"
            )
            raise self._failed(task, f"discovery_{detail}") from exc
        return self._cache

    def _failed(self, task: asyncio.Task[JwksCache], detail: str) -> IssuerKeysUnavailable:
        self._last_error = detail
        self._failed_at = self._clock()
        if self._reported is not task:  # once per attempt, not once per waiting caller
            self._reported = task
            log.warning("OIDC discovery failed issuer=%s error=%s", self._issuer_name, detail)
        return IssuerKeysUnavailable({"issuer": self._issuer_name})

    async def _discover(self) -> JwksCache:
        started = time.perf_counter()
        try:
            jwks_uri = await discover_jwks_uri(self._session, self._issuer, self._settings)
        except Exception as exc:
            if self._on_discovery is not None:
                detail = (exc.detail if isinstance(exc, DiscoveryFailed)
                          else f"internal_{type(exc).__name__}")
                self._on_discovery(detail, time.perf_counter() - started)
            raise
        if self._on_discovery is not None:
            self._on_discovery(None, time.perf_counter() - started)
        return JwksCache(
            jwks_uri, self._session, self._clock, self._settings, issuer_name=self._issuer_name,
            on_fetch=self._on_fetch,
        )

    async def prime(self) -> KeySet:
        return await (await self._ready_cache()).prime()

    async def key_for(self, kid: str | None) -> KeySet:
        return await (await self._ready_cache()).key_for(kid)

    def status(self) -> JwksStatus:
        if self._cache is not None:
            return self._cache.status()
        return JwksStatus(ready=False, stale=False, age_s=None, key_count=0, fetches=0,
                          last_error=self._last_error)

    async def settle(self) -> None:
        """Wait for a key-set refresh in flight, if any (see `JwksCache.settle`)."""
        if self._cache is not None:
            await self._cache.settle()

    async def aclose(self) -> None:
        if self._discovering is not None and not self._discovering.done():
            self._discovering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._discovering
        if self._cache is not None:
            await self._cache.aclose()
