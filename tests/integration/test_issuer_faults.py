"""Key sources against an issuer that fails the way real networks do (`faultissuer`, on
127.0.0.1:0): hung, slow, refusing, answering garbage or absurdly nested JSON, publishing
secrets in its JWKS.

The caches' clock is a fake the tests advance; the fetch timeouts are the defaults
(`jwks_timeout_ms` = 3000, as `bootstrap.key_source` maps it). "At once" is shown without
timing: the calls complete (within a generous `asyncio.wait_for` bound) while the hung
refresh is still in flight, i.e. before it has failed or answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from piigate.errors import IssuerKeysUnavailable, TokenKeyUnknown
from piigate.tokens.discovery import DiscoveredJwks
from piigate.tokens.jwks import JwksCache, JwksCacheSettings
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate.tokens.verifier import KeySource, TokenVerifier
from tests.support.faultissuer import DISCOVERY_PATH, JWKS_PATH, FaultIssuer, running_fault_issuer
from tests.support.jwt_factory import KeyPair, ec_keypair, make_token, rsa_keypair

T0 = 1_700_000_000.0
KEY = rsa_keypair("fault-1")
BOUND_S = 10.0  # only stops a hang; no step below should come near it
DEFAULT_TIMEOUT_S = 3.0  # config default jwks_timeout_ms = 3000
SETTINGS = JwksCacheSettings(
    total_timeout_s=DEFAULT_TIMEOUT_S,
    connect_timeout_s=min(2.0, DEFAULT_TIMEOUT_S),
    read_timeout_s=DEFAULT_TIMEOUT_S,
)
MAX_AGE_S = 300.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def issuer() -> AsyncIterator[FaultIssuer]:
    async with running_fault_issuer(KEY) as fake:
        fake.max_age_s = int(MAX_AGE_S)
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


SourceFactory = Callable[[str], Any]


@pytest.fixture
async def make_source(
    issuer: FaultIssuer, session: aiohttp.ClientSession, clock: FakeClock
) -> AsyncIterator[SourceFactory]:
    """`make_source("jwks")`: a JwksCache on the JWKS URL; `make_source("discovery")`: a
    DiscoveredJwks on the issuer. Both are closed after the test (hung refreshes included)."""
    sources: list[JwksCache | DiscoveredJwks] = []

    def build(kind: str) -> JwksCache | DiscoveredJwks:
        source: JwksCache | DiscoveredJwks
        if kind == "jwks":
            source = JwksCache(issuer.jwks_url, session, clock, SETTINGS, issuer_name="fault")
        else:
            source = DiscoveredJwks(issuer.issuer_url, session, clock, SETTINGS,
                                    issuer_name="fault")
        sources.append(source)
        return source

    yield build
    issuer.release()
    for source in sources:
        await source.aclose()


async def bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, BOUND_S)


async def wait_until_hung(issuer: FaultIssuer, count: int = 1) -> None:
    for _ in range(1000):  # bounded: at most ~10 s of 10 ms polls, ended by BOUND_S anyway
        if issuer.hung >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the refresh never reached the issuer")


def access_token(issuer: FaultIssuer, key: KeyPair = KEY, **overrides: Any) -> str:
    claims = {"iss": issuer.issuer_url, "sub": "user-1", "iat": int(T0) - 10,
              "exp": int(T0) + 86_400, **overrides}
    return make_token(claims, key)


def verifier(issuer: FaultIssuer, source: KeySource, clock: FakeClock) -> TokenVerifier:
    policy = IssuerPolicy(name="fault", issuer=issuer.issuer_url, algorithms=("RS256", "ES256"),
                          typ_rule=TypRule.AT_JWT)
    return TokenVerifier({issuer.issuer_url: (policy, source)}, clock)


# --- B: a hung issuer never holds a request while stale keys are within their bound ------
@pytest.mark.parametrize("kind", ["jwks", "discovery"])
async def test_hung_refresh_is_answered_from_stale_keys_at_once(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock, kind: str
) -> None:
    source = make_source(kind)
    good = await bounded(source.prime())
    await issuer.set_mode("hang", only="jwks")
    clock.advance(MAX_AGE_S)  # expired: due for a refresh, well within stale_if_error_s

    tokens = verifier(issuer, source, clock)
    sets = await bounded(asyncio.gather(*(source.key_for(KEY.kid) for _ in range(50))))
    verified = await bounded(asyncio.gather(
        *(tokens.verify(access_token(issuer, jti=f"j{n}")) for n in range(20))
    ))
    assert all(keys is good for keys in sets)
    assert {v.subject for v in verified} == {"user-1"}
    await wait_until_hung(issuer)
    # Answered while the one refresh is still hung: nobody waited for it.
    assert issuer.hung == 1
    assert issuer.hits[JWKS_PATH] == 2  # the start-up fetch and one refresh in flight
    status = source.status()
    assert (status.ready, status.stale, status.fetches, status.last_error) == (
        True, True, 2, None
    )

    issuer.release()  # the hung refresh answers: the new set replaces the stale one
    await bounded(source.settle())
    fresh = await bounded(source.key_for(KEY.kid))
    assert fresh is not good
    assert not source.status().stale


@pytest.mark.parametrize("kind", ["jwks", "discovery"])
async def test_past_the_stale_bound_a_hung_issuer_fails_closed_at_once(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock, kind: str
) -> None:
    source = make_source(kind)
    await bounded(source.prime())
    await issuer.set_mode("hang", only="jwks")
    clock.advance(MAX_AGE_S + SETTINGS.stale_if_error_s)  # past expiry + stale bound

    results = await bounded(asyncio.gather(
        *(source.key_for(KEY.kid) for _ in range(20)), return_exceptions=True
    ))
    assert all(isinstance(r, IssuerKeysUnavailable) for r in results), results
    assert {r.metadata["issuer"] for r in results if isinstance(r, IssuerKeysUnavailable)} == {
        "fault"
    }
    await wait_until_hung(issuer)
    assert issuer.hung == 1  # failed before the one refresh (started beside) gave up
    assert source.status().last_error is None
    assert source.status().ready is False


async def test_a_slow_refresh_is_answered_from_stale_keys_until_it_lands(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock
) -> None:
    source = make_source("jwks")
    good = await bounded(source.prime())
    issuer.keys.append(ec_keypair("fault-2"))
    await issuer.set_mode("slow", only="jwks")
    clock.advance(MAX_AGE_S)
    assert await bounded(source.key_for(KEY.kid)) is good
    await bounded(source.settle())
    assert "fault-2" in await bounded(source.key_for(KEY.kid))
    assert issuer.hits[JWKS_PATH] == 2


async def test_a_refusing_issuer_serves_stale_keys_then_backs_off(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock
) -> None:
    source = make_source("jwks")
    good = await bounded(source.prime())
    await issuer.set_mode("refused")
    clock.advance(MAX_AGE_S)
    assert await bounded(source.key_for(KEY.kid)) is good
    await bounded(source.settle())
    status = source.status()
    assert status.last_error is not None
    assert status.last_error.startswith("client_")
    fetches = status.fetches
    for _ in range(50):  # within the back-off no call starts another fetch
        assert await bounded(source.key_for(KEY.kid)) is good
    assert source.status().fetches == fetches

    await issuer.set_mode("ok")
    clock.advance(SETTINGS.retry_after_failure_s)
    assert await bounded(source.key_for(KEY.kid)) is good  # refresh beside
    await bounded(source.settle())
    assert source.status().last_error is None
    assert not source.status().stale


async def test_a_garbage_key_set_keeps_the_last_good_one(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock
) -> None:
    source = make_source("jwks")
    good = await bounded(source.prime())
    await issuer.set_mode("garbage", only="jwks")
    clock.advance(MAX_AGE_S)
    assert await bounded(source.key_for(KEY.kid)) is good
    await bounded(source.settle())
    assert source.status().last_error == "jwks_not_json"


# --- C: discovery of absurdly nested JSON is a typed failure that backs off --------------
@pytest.mark.parametrize("mode", ["nested", "garbage"])
async def test_unreadable_discovery_fails_typed_and_backs_off(
    issuer: FaultIssuer, make_source: SourceFactory, clock: FakeClock, mode: Any
) -> None:
    source = make_source("discovery")
    await issuer.set_mode(mode, only="discovery")
    for _ in range(20):
        with pytest.raises(IssuerKeysUnavailable):
            await bounded(source.key_for(KEY.kid))
    assert issuer.hits[DISCOVERY_PATH] == 1  # the back-off holds: not once per request
    assert source.status().last_error == "discovery_not_json"
    assert JWKS_PATH not in issuer.hits

    await issuer.set_mode("ok", only="discovery")
    clock.advance(SETTINGS.retry_after_failure_s)
    assert KEY.kid in await bounded(source.key_for(KEY.kid))
    assert issuer.hits[DISCOVERY_PATH] == 2


async def test_a_nested_key_set_is_unreadable_not_a_crash(
    issuer: FaultIssuer, make_source: SourceFactory
) -> None:
    source = make_source("jwks")
    await issuer.set_mode("nested", only="jwks")
    with pytest.raises(IssuerKeysUnavailable):
        await bounded(source.prime())
    assert source.status().last_error == "jwks_not_json"


# --- D: symmetric and private keys in a JWKS are skipped, counted and logged -------------
async def test_secret_entries_are_skipped_and_the_public_keys_kept(
    issuer: FaultIssuer,
    make_source: SourceFactory,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    leaked = ec_keypair("leaked")
    private = {**leaked.jwk(), "d": "c2VjcmV0LXNjYWxhcg"}
    hmac = {"kty": "oct", "k": "dG9wLXNlY3JldC1obWFjLWtleQ", "kid": "hmac", "alg": "HS256"}
    issuer.extra_entries.extend([hmac, private])
    source = make_source("jwks")
    with caplog.at_level(logging.INFO, logger="piigate.tokens.jwks"):
        keys = await bounded(source.prime())
    assert list(keys) == [KEY.kid]
    status = source.status()
    assert (status.ready, status.key_count, status.secret_keys_skipped) == (True, 1, 2)
    assert "count=2" in caplog.text
    for secret in ("c2VjcmV0LXNjYWxhcg", "dG9wLXNlY3JldC1obWFjLWtleQ"):
        assert secret not in caplog.text

    tokens = verifier(issuer, source, clock)
    assert (await bounded(tokens.verify(access_token(issuer)))).subject == "user-1"
    with pytest.raises(TokenKeyUnknown):  # the private entry's public half is never used
        await bounded(tokens.verify(access_token(issuer, leaked)))


@pytest.mark.parametrize("uri", ["//[::1]:x@//", "https://[::1]:x@/"])
def test_a_jwks_uri_yarl_cannot_read_is_refused_as_such(uri: str) -> None:
    from piigate.tokens.fetch import check_jwks_uri

    with pytest.raises(ValueError, match="not a URL"):
        check_jwks_uri(uri)
