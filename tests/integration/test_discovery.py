"""OIDC discovery (`discover_jwks_uri`, `DiscoveredJwks`) against the fake IdP on 127.0.0.1:0.

The fake IdP records every path it is asked for, so fetch counts are read from its
`paths` list rather than inferred. The JWKS cache's clock is a fixed fake; wall-clock waits
are only the loopback round trips, each bounded by `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from piigate.errors import IssuerKeysUnavailable
from piigate.tokens.discovery import DiscoveredJwks, DiscoveryFailed, discover_jwks_uri
from piigate.tokens.jwks import JwksCacheSettings
from tests.support.idp import FakeIdp, running_fake_idp
from tests.support.jwt_factory import rsa_keypair

T0 = 1_700_000_000.0
KEY = rsa_keypair("discovered-1")
CONFIGURATION = "/.well-known/openid-configuration"
SETTINGS = JwksCacheSettings(connect_timeout_s=2.0, read_timeout_s=3.0, total_timeout_s=5.0)
BOUND_S = 10.0  # no single step below should come near this; it only stops a hang


def clock() -> float:
    return T0


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdp]:
    async with running_fake_idp(KEY) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


def source(idp: FakeIdp, session: aiohttp.ClientSession,
           settings: JwksCacheSettings = SETTINGS) -> DiscoveredJwks:
    return DiscoveredJwks(idp.issuer("/"), session, clock, settings, issuer_name="acme")


async def discover(idp: FakeIdp, session: aiohttp.ClientSession,
                   settings: JwksCacheSettings = SETTINGS) -> str:
    return await asyncio.wait_for(discover_jwks_uri(session, idp.issuer("/"), settings), BOUND_S)


# --- discover_jwks_uri --------------------------------------------------------------------
async def test_the_documents_jwks_uri_is_returned(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    assert await discover(idp, session) == idp.base_url + "/jwks"
    assert idp.paths == [CONFIGURATION]


async def test_a_document_naming_another_issuer_is_refused(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    # OIDC Discovery §4.3: the document's issuer must be exactly the configured one.
    idp.mode = "wrong-issuer"
    with pytest.raises(DiscoveryFailed) as caught:
        await discover(idp, session)
    assert caught.value.detail == "issuer_mismatch"


async def test_a_redirect_is_refused_not_followed(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    idp.mode = "redirect"
    with pytest.raises(DiscoveryFailed) as caught:
        await discover(idp, session)
    assert caught.value.detail == "http_redirect_302"
    assert idp.paths == [CONFIGURATION]  # the Location was never visited


async def test_an_oversized_document_is_refused(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    # The document is ~100 bytes; a cap below that must stop it.
    with pytest.raises(DiscoveryFailed) as caught:
        await discover(idp, session, JwksCacheSettings(max_response_bytes=32))
    assert caught.value.detail == "response_too_large"


async def test_an_unreachable_issuer_is_a_discovery_failure(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    idp.mode = "down"
    with pytest.raises(DiscoveryFailed) as caught:
        await discover(idp, session)
    assert caught.value.detail == "http_status_503"


# --- DiscoveredJwks -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "issuer",
    ["http://idp.example.com/", "http://10.0.0.1/", "ftp://127.0.0.1/", "idp.example.com"],
)
async def test_a_plain_http_non_loopback_issuer_is_refused_at_construction(
    issuer: str, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ValueError, match="jwks_uri"):
        DiscoveredJwks(issuer, session, clock, SETTINGS, issuer_name="acme")


async def test_https_and_loopback_http_issuers_are_accepted_at_construction(
    session: aiohttp.ClientSession,
) -> None:
    for issuer in ("https://idp.example.com/", "http://127.0.0.1:9/", "http://[::1]:9/"):
        discovered = DiscoveredJwks(issuer, session, clock, SETTINGS)
        assert discovered.status().ready is False
        await discovered.aclose()


async def test_a_cold_source_discovers_and_fetches_once_for_100_concurrent_callers(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    discovered = source(idp, session)
    try:
        sets = await asyncio.wait_for(
            asyncio.gather(*(discovered.key_for(KEY.kid) for _ in range(100))), BOUND_S
        )
        assert all(keys is sets[0] for keys in sets)
        assert KEY.kid in sets[0]
        assert idp.paths.count(CONFIGURATION) == 1
        assert idp.paths.count("/jwks") == 1
        assert len(idp.paths) == 2
        status = discovered.status()
        assert (status.ready, status.key_count, status.fetches) == (True, 1, 1)
    finally:
        await discovered.aclose()


async def test_a_failed_discovery_is_shared_then_retried_after_the_backoff(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    now = [1000.0]
    discovered = DiscoveredJwks(idp.issuer("/"), session, lambda: now[0], SETTINGS,
                                issuer_name="acme")
    try:
        idp.mode = "down"
        results = await asyncio.wait_for(
            asyncio.gather(*(discovered.key_for(KEY.kid) for _ in range(20)),
                           return_exceptions=True),
            BOUND_S,
        )
        assert all(isinstance(r, IssuerKeysUnavailable) for r in results)
        issuers = {r.metadata["issuer"] for r in results if isinstance(r, IssuerKeysUnavailable)}
        assert issuers == {"acme"}
        assert idp.paths == [CONFIGURATION]  # one shared attempt, not twenty
        status = discovered.status()
        assert status.ready is False
        assert status.last_error == "discovery_http_status_503"

        idp.mode = "ok"
        # Within the backoff a dead issuer is not asked again, whatever the traffic.
        with pytest.raises(IssuerKeysUnavailable):
            await asyncio.wait_for(discovered.key_for(KEY.kid), BOUND_S)
        assert idp.paths == [CONFIGURATION]
        now[0] += SETTINGS.retry_after_failure_s
        keys = await asyncio.wait_for(discovered.key_for(KEY.kid), BOUND_S)
        assert KEY.kid in keys
        assert idp.paths == [CONFIGURATION, CONFIGURATION, "/jwks"]
        assert discovered.status().ready is True
        assert discovered.status().last_error is None
    finally:
        await discovered.aclose()


async def test_a_mismatched_document_leaves_the_source_unusable(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    discovered = source(idp, session)
    try:
        idp.mode = "wrong-issuer"
        with pytest.raises(IssuerKeysUnavailable):
            await asyncio.wait_for(discovered.prime(), BOUND_S)
        assert discovered.status().last_error == "discovery_issuer_mismatch"
        assert "/jwks" not in idp.paths  # keys are never fetched from an unvetted document
    finally:
        await discovered.aclose()


async def test_an_oversized_key_set_behind_discovery_is_refused(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    discovered = source(idp, session)
    try:
        idp.mode = "huge"
        with pytest.raises(IssuerKeysUnavailable):
            await asyncio.wait_for(discovered.prime(), BOUND_S)
        status = discovered.status()
        assert (status.ready, status.last_error) == (False, "response_too_large")
    finally:
        await discovered.aclose()


async def test_a_cancelled_caller_does_not_cancel_the_shared_discovery(
    idp: FakeIdp, session: aiohttp.ClientSession
) -> None:
    discovered = source(idp, session)
    try:
        first = asyncio.create_task(discovered.key_for(KEY.kid))
        second = asyncio.create_task(discovered.key_for(KEY.kid))
        await asyncio.sleep(0)  # both are now waiting on the one discovery
        first.cancel()
        keys = await asyncio.wait_for(second, BOUND_S)
        assert KEY.kid in keys
        assert first.cancelled()
        assert idp.paths.count(CONFIGURATION) == 1
    finally:
        await discovered.aclose()
