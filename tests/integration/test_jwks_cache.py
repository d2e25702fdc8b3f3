"""JwksCache and TokenVerifier against a real aiohttp JWKS server on 127.0.0.1:0.

The cache's clock is a fake that the tests advance; wall-clock waits are only the short
HTTP round trips (and one 0.2 s client timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import string
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from piigate.errors import (
    IssuerKeysUnavailable,
    TokenExpired,
    TokenIssuerUnknown,
    TokenKeyUnknown,
    TokenSignatureInvalid,
    TokenTooOld,
)
from piigate.tokens.jwks import JwksCache, JwksCacheSettings
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate.tokens.verifier import TokenVerifier
from tests.support.jwt_factory import (
    KeyPair,
    ec_keypair,
    jwks_bytes,
    make_token,
    rsa_keypair,
)

T0 = 1_700_000_000.0
K1 = rsa_keypair("k1")
K2 = ec_keypair("k2")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksServer:
    """A JWKS endpoint whose answers each test sets."""

    url: str = ""
    document: bytes = field(default_factory=lambda: jwks_bytes(K1))
    cache_control: str | None = None
    status: int = 200
    delay_s: float = 0.0
    redirect_to: str | None = None
    stream: bool = False
    hits: int = 0
    paths: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        self.paths.append(request.path)
        self.entered.set()
        if self.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay_s)
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to)
        headers = {"Content-Type": "application/json"}
        if self.cache_control is not None:
            headers["Cache-Control"] = self.cache_control
        if self.stream:  # chunked: no Content-Length to trust
            response = web.StreamResponse(status=self.status, headers=headers)
            await response.prepare(request)
            for start in range(0, len(self.document), 8192):
                await response.write(self.document[start : start + 8192])
            await response.write_eof()
            return response
        return web.Response(status=self.status, body=self.document, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    state = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", state.handle)
    app.router.add_get("/elsewhere", state.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/jwks"
    yield state
    state.release.set()
    await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


SETTINGS = JwksCacheSettings(
    default_ttl_s=600,
    min_ttl_s=60,
    max_ttl_s=3600,
    refresh_ahead_fraction=1.0,
    unknown_kid_cooldown_s=30,
    retry_after_failure_s=5,
    stale_if_error_s=1800,
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    total_timeout_s=2.0,
    max_response_bytes=64 * 1024,
)


@pytest.fixture
async def make_cache(
    server: JwksServer, session: aiohttp.ClientSession, clock: FakeClock
) -> AsyncIterator[Callable[..., JwksCache]]:
    caches: list[JwksCache] = []

    def build(**overrides: Any) -> JwksCache:
        settings = dataclasses.replace(SETTINGS, **overrides)
        cache = JwksCache(server.url, session, clock, settings, issuer_name="test-issuer")
        caches.append(cache)
        return cache

    yield build
    for cache in caches:  # a background refresh must not outlive its test
        await cache.aclose()


# --- fetching and caching ----------------------------------------------------------------
async def test_cold_start_fetches_once_then_serves_from_cache(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    assert not cache.status().ready
    keys = await cache.key_for("k1")
    assert "k1" in keys
    assert keys.fetched_at == T0
    clock.advance(100)
    assert await cache.key_for("k1") is keys
    assert server.hits == 1
    status = cache.status()
    assert (status.ready, status.stale, status.age_s, status.key_count) == (True, False, 100, 1)
    assert status.fetches == 1
    assert status.last_error is None


async def test_prime_fetches_at_start_up(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    cache = make_cache()
    keys = await cache.prime()
    assert "k1" in keys
    assert server.hits == 1
    assert cache.status().ready


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [("max-age=120", 120), ("max-age=5", 60), ("max-age=999999", 3600), (None, 600)],
)
async def test_max_age_is_honoured_and_clamped(
    server: JwksServer,
    make_cache: Callable[..., JwksCache],
    clock: FakeClock,
    cache_control: str | None,
    ttl: float,
) -> None:
    server.cache_control = cache_control
    cache = make_cache()
    await cache.key_for("k1")
    clock.advance(ttl - 1)
    await cache.key_for("k1")
    await cache.settle()
    assert server.hits == 1
    clock.advance(1)
    await cache.key_for("k1")  # answered from the expired set; the refresh runs beside
    await cache.settle()
    assert server.hits == 2


async def test_refresh_ahead_serves_current_keys_while_fetching(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    server.cache_control = "max-age=100"
    cache = make_cache(refresh_ahead_fraction=0.5)
    first = await cache.key_for("k1")
    clock.advance(50)
    server.document = jwks_bytes(K1, K2)
    assert await cache.key_for("k1") is first  # served at once; a refresh has started
    # An unknown kid joins the refresh in flight instead of starting another one.
    assert "k2" in await cache.key_for("k2")
    assert server.hits == 2


async def test_rotation_new_kid_triggers_one_refetch_after_cooldown(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    await cache.key_for("k1")
    server.document = jwks_bytes(K1, K2)
    clock.advance(10)  # within the cooldown after the last fetch: no refetch yet
    assert "k2" not in await cache.key_for("k2")
    assert server.hits == 1
    clock.advance(21)
    keys = await cache.key_for("k2")
    assert "k2" in keys
    assert server.hits == 2
    assert "k2" in await cache.key_for("k2")
    assert server.hits == 2


async def test_rotation_right_after_start_up_is_picked_up_at_once(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    # K4: the start-up fetch does not start the unknown-kid cooldown. An issuer that
    # rotates a few seconds after the gateway started gets its new tokens accepted.
    cache = make_cache()
    await cache.prime()
    server.document = jwks_bytes(K1, K2)
    clock.advance(5)  # well within the 30 s cooldown
    assert "k2" in await cache.key_for("k2")
    assert server.hits == 2
    # Only the first unknown kid is let through: the cooldown now counts from that fetch.
    clock.advance(5)
    assert "k3" not in await cache.key_for("k3")
    assert server.hits == 2


async def test_start_up_grace_is_one_refetch_however_many_unknown_kids(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    await cache.prime()
    clock.advance(1)
    await asyncio.gather(*(cache.key_for(f"ghost-{n}") for n in range(500)))
    await asyncio.gather(*(cache.key_for(f"other-{n}") for n in range(500)))
    assert server.hits == 2


async def test_thousand_concurrent_cold_gets_share_one_fetch(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    server.delay_s = 0.05  # keep the fetch in flight while the callers pile up
    cache = make_cache()
    results = await asyncio.gather(*(cache.key_for("k1") for _ in range(1000)))
    assert server.hits == 1
    assert all(keys is results[0] for keys in results)


async def test_random_unknown_kids_cause_bounded_fetches(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    rng = random.Random(1234)

    def random_kid() -> str:
        return "".join(rng.choices(string.ascii_letters + string.digits, k=16))

    cache = make_cache()
    kids = [random_kid() for _ in range(10_000)]
    concurrent = await asyncio.gather(*(cache.key_for(kid) for kid in kids[:5000]))
    for kid in kids[5000:]:
        await cache.key_for(kid)
    assert all("k1" in keys for keys in concurrent)
    assert server.hits <= 2
    hits_in_first_window = server.hits

    clock.advance(31)  # a new cooldown window: at most one more fetch, however many kids
    await asyncio.gather(*(cache.key_for(random_kid()) for _ in range(10_000)))
    assert hits_in_first_window <= server.hits <= hits_in_first_window + 1


async def test_remembered_miss_is_not_refetched_in_the_next_window(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    await cache.key_for("k1")
    clock.advance(31)
    await cache.key_for("ghost")
    assert server.hits == 2
    clock.advance(31)
    await cache.key_for("ghost")  # remembered as a miss: no refetch
    assert server.hits == 2
    await cache.key_for("x" * 129)  # too long to be any kid: never refetched
    assert server.hits == 2


async def test_issuer_down_serves_stale_keys_until_the_bound(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    server.cache_control = "max-age=600"
    cache = make_cache()
    good = await cache.key_for("k1")
    server.status = 503
    clock.advance(600)  # expired: the last good set is served, the refresh fails beside
    assert await cache.key_for("k1") is good
    await cache.settle()
    status = cache.status()
    assert status.stale
    assert status.ready
    assert status.last_error == "http_status_503"
    hits = server.hits
    for _ in range(100):  # failed refreshes are retried at most every 5 s, not per call
        await cache.key_for("k1")
    assert server.hits == hits

    clock.advance(1800 - 1)  # one second before the stale bound
    assert await cache.key_for("k1") is good
    await cache.settle()
    clock.advance(1)
    with pytest.raises(IssuerKeysUnavailable) as caught:
        await cache.key_for("k1")
    assert caught.value.metadata == {"issuer": "test-issuer"}
    assert not cache.status().ready

    server.status = 200  # the issuer comes back
    clock.advance(5)
    # Past the bound a call fails closed at once (K2); the refresh it starts brings the
    # issuer back for the next call.
    with pytest.raises(IssuerKeysUnavailable):
        await cache.key_for("k1")
    await cache.settle()
    assert "k1" in await cache.key_for("k1")
    assert cache.status().ready
    assert cache.status().last_error is None


async def test_cold_failure_is_unavailable_and_retried_after_backoff(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    server.status = 500
    cache = make_cache()
    with pytest.raises(IssuerKeysUnavailable):
        await cache.prime()
    with pytest.raises(IssuerKeysUnavailable):
        await cache.key_for("k1")
    assert server.hits == 1
    server.status = 200
    clock.advance(5)
    assert "k1" in await cache.key_for("k1")
    assert server.hits == 2


async def test_slow_issuer_times_out(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    server.delay_s = 30
    cache = make_cache(read_timeout_s=0.2, total_timeout_s=0.2)
    with pytest.raises(IssuerKeysUnavailable):
        await asyncio.wait_for(cache.prime(), timeout=10)
    assert cache.status().last_error == "timeout"


@pytest.mark.parametrize("stream", [False, True], ids=["content_length", "chunked"])
async def test_oversized_response_is_refused(
    server: JwksServer, make_cache: Callable[..., JwksCache], stream: bool
) -> None:
    document = json.loads(jwks_bytes(K1))
    document["padding"] = "x" * (70 * 1024)
    server.document = json.dumps(document).encode()
    server.stream = stream
    cache = make_cache()
    with pytest.raises(IssuerKeysUnavailable):
        await cache.prime()
    assert cache.status().last_error == "response_too_large"


async def test_redirect_is_refused(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    server.redirect_to = "/elsewhere"
    cache = make_cache()
    with pytest.raises(IssuerKeysUnavailable):
        await cache.prime()
    assert cache.status().last_error == "http_redirect_302"
    assert server.paths == ["/jwks"]  # the redirect target was never fetched


async def test_non_https_remote_uri_is_refused_at_construction(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="https"):
        JwksCache("http://issuer.example.com/jwks", session, clock, SETTINGS)


async def test_duplicate_kids_are_refused(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    server.document = jwks_bytes(K1, rsa_keypair("other").jwk(kid="k1"))
    cache = make_cache()
    with pytest.raises(IssuerKeysUnavailable):
        await cache.prime()
    assert cache.status().last_error == "jwks_duplicate_kid"


async def test_bad_document_keeps_the_last_good_set(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    good = await cache.key_for("k1")
    server.document = b"<html>maintenance</html>"
    clock.advance(600)
    assert await cache.key_for("k1") is good
    await cache.settle()
    assert await cache.key_for("k1") is good
    assert cache.status().last_error == "jwks_not_json"


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    server: JwksServer, make_cache: Callable[..., JwksCache]
) -> None:
    server.delay_s = 0.1
    cache = make_cache()
    impatient = asyncio.create_task(cache.key_for("k1"))
    patient = asyncio.create_task(cache.key_for("k1"))
    await asyncio.wait_for(server.entered.wait(), timeout=5)
    impatient.cancel()
    assert "k1" in await patient
    assert impatient.cancelled()
    assert server.hits == 1


# --- TokenVerifier -----------------------------------------------------------------------
ISSUER = "https://auth.example.com/"
API = "https://api.example.com"


def policy(issuer: str = ISSUER, **overrides: Any) -> IssuerPolicy:
    settings: dict[str, Any] = {
        "name": "main",
        "issuer": issuer,
        "algorithms": ("RS256", "ES256"),
        "audiences": (API,),
        "typ_rule": TypRule.AT_JWT,
        "max_age_s": 7200,
    }
    return IssuerPolicy(**{**settings, **overrides})


def access_token(key: KeyPair = K1, **overrides: Any) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "user-1",
        "aud": API,
        "iat": int(T0) - 10,
        "exp": int(T0) + 900,
        **overrides,
    }
    return make_token({k: v for k, v in claims.items() if v is not None}, key)


@pytest.fixture
def verifier(
    make_cache: Callable[..., JwksCache], clock: FakeClock
) -> Callable[..., Awaitable[TokenVerifier]]:
    async def build(cache_size: int = 100, **policy_overrides: Any) -> TokenVerifier:
        issuers = {ISSUER: (policy(**policy_overrides), make_cache())}
        return TokenVerifier(issuers, clock, cache_size=cache_size)

    return build


async def test_verifier_selects_issuer_exactly_and_verifies(
    server: JwksServer, verifier: Callable[..., Awaitable[TokenVerifier]]
) -> None:
    tokens = await verifier()
    verified = await tokens.verify(access_token())
    assert verified.subject == "user-1"
    assert verified.issuer_name == "main"
    for near_miss in ("https://auth.example.com", "https://auth.example.com/.evil"):
        with pytest.raises(TokenIssuerUnknown):
            await tokens.verify(access_token(iss=near_miss))
    assert server.hits == 1  # nothing fetched for unknown issuers


async def test_repeated_token_is_verified_once(
    server: JwksServer,
    verifier: Callable[..., Awaitable[TokenVerifier]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import piigate.tokens.verifier as tokens_module

    calls = 0
    real_verify = tokens_module.verify  # type: ignore[attr-defined]

    def counting_verify(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(tokens_module, "verify", counting_verify)
    tokens = await verifier()
    tok = access_token()
    first = await tokens.verify(tok)
    for _ in range(50):
        assert await tokens.verify(tok) is first
    assert calls == 1
    assert len(tokens) == 1


async def test_cached_token_never_outlives_exp(
    verifier: Callable[..., Awaitable[TokenVerifier]], clock: FakeClock
) -> None:
    tokens = await verifier(leeway_s=0)
    tok = access_token(exp=int(T0) + 60)
    await tokens.verify(tok)
    clock.advance(61)
    with pytest.raises(TokenExpired):
        await tokens.verify(tok)
    assert len(tokens) == 0


async def test_cached_token_is_checked_for_age_on_every_use(
    verifier: Callable[..., Awaitable[TokenVerifier]], clock: FakeClock
) -> None:
    tokens = await verifier(max_age_s=300)
    tok = access_token(exp=int(T0) + 3000)
    await tokens.verify(tok)
    clock.advance(290)  # age 300: at the cap
    await tokens.verify(tok)
    clock.advance(1)
    with pytest.raises(TokenTooOld):
        await tokens.verify(tok)


async def test_cached_token_dies_with_its_key(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    tokens = TokenVerifier({ISSUER: (policy(), cache)}, clock)
    tok = access_token()
    await tokens.verify(tok)
    server.document = jwks_bytes(K2)  # k1 removed from the issuer's set
    clock.advance(600)  # the set expires: the next use starts its refresh beside (K1)
    await tokens.verify(tok)
    await cache.settle()
    with pytest.raises(TokenKeyUnknown):
        await tokens.verify(tok)
    assert len(tokens) == 0
    assert (await tokens.verify(access_token(K2))).subject == "user-1"


async def test_cached_token_dies_when_the_kid_now_names_other_key_material(
    server: JwksServer, make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    cache = make_cache()
    tokens = TokenVerifier({ISSUER: (policy(), cache)}, clock)
    tok = access_token()
    await tokens.verify(tok)
    server.document = jwks_bytes(rsa_keypair("replacement").jwk(kid="k1"))
    clock.advance(600)
    await tokens.verify(tok)  # answered from the expired set; the refresh runs beside
    await cache.settle()
    with pytest.raises(TokenSignatureInvalid):
        await tokens.verify(tok)


async def test_cache_is_bounded(verifier: Callable[..., Awaitable[TokenVerifier]]) -> None:
    tokens = await verifier(cache_size=3)
    for number in range(10):
        await tokens.verify(access_token(jti=f"jti-{number}"))
    assert len(tokens) == 3


async def test_hit_past_the_stale_bound_fails_closed(
    server: JwksServer, verifier: Callable[..., Awaitable[TokenVerifier]], clock: FakeClock
) -> None:
    tokens = await verifier(max_age_s=None)
    tok = access_token(exp=int(T0) + 86400, iat=int(T0) - 10)
    await tokens.verify(tok)
    server.status = 503
    clock.advance(600 + 1800)
    with pytest.raises(IssuerKeysUnavailable):
        await tokens.verify(tok)


async def test_verifier_rejects_mismatched_registration(
    make_cache: Callable[..., JwksCache], clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="iss"):
        TokenVerifier({"https://other/": (policy(), make_cache())}, clock)
