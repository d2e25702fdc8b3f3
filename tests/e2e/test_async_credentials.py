"""The async client never blocks its event loop for the caller's token: with a token
endpoint that takes 0.6 s, a ticker on the same loop keeps ticking while the token is
fetched, concurrent calls share one token request, and the calls then succeed through
the real gateway. The slow endpoint is a stand-in on loopback that waits, then forwards
to the real dev issuer."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate_client import AsyncDetokenizationClient, ClientCredentials, ClientSecretPost
from tests.support.stack import running_stack

DELAY_S = 0.6
TICK_S = 0.01


@asynccontextmanager
async def slow_token_endpoint(upstream: str, requests: list[float]) -> AsyncIterator[str]:
    """A token endpoint that sleeps DELAY_S, then forwards the form to `upstream`."""

    async def token(request: web.Request) -> web.Response:
        requests.append(time.monotonic())
        form = await request.post()
        await asyncio.sleep(DELAY_S)
        forwarded = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        async with aiohttp.ClientSession() as http, http.post(
            upstream, data=dict(form), headers=forwarded
        ) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type="application/json")

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    runner, base_url = await start_http_app(app, ListenAddress("127.0.0.1", 0))
    try:
        yield base_url + "/oauth/token"
    finally:
        await runner.cleanup()


async def test_the_loop_keeps_serving_while_a_slow_token_is_fetched() -> None:
    async with running_stack() as stack:
        requests: list[float] = []
        upstream = stack.issuer.base_url + "/oauth/token"
        async with slow_token_endpoint(upstream, requests) as token_url:
            credential = ClientCredentials(
                token_url, "support-tool", ClientSecretPost(stack.secrets.clients["support-tool"]),
                audience="piigate",
            )
            ticks: list[float] = []
            stop = asyncio.Event()

            async def ticker() -> None:
                while not stop.is_set() and len(ticks) < 10_000:  # bounded either way
                    ticks.append(time.monotonic())
                    await asyncio.sleep(TICK_S)

            ticking = asyncio.create_task(ticker())
            async with AsyncDetokenizationClient(stack.target, credential, timeout_s=5) as client:
                started = time.monotonic()
                results = await asyncio.gather(
                    *(client.detokenize(stack.user_token(p)) for p in ("alice", "bob", "carol"))
                )
                elapsed = time.monotonic() - started
            stop.set()
            await asyncio.wait_for(ticking, 1)

    assert [r.profile for r in results] == ["support"] * 3
    assert len(requests) == 1  # three concurrent calls, one token request
    assert elapsed >= DELAY_S
    during = [t for t in ticks if started <= t <= started + DELAY_S]
    # A blocked loop would tick once; a free one about DELAY_S / TICK_S = 60 times.
    assert len(during) >= 20, len(during)
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) < DELAY_S / 2


async def test_a_blocking_credential_is_what_the_ticker_would_catch() -> None:
    """The yardstick works: a credential that blocks the loop for DELAY_S stops the ticker."""
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set() and len(ticks) < 1000:  # bounded either way
            ticks.append(time.monotonic())
            await asyncio.sleep(TICK_S)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(TICK_S * 3)
    time.sleep(DELAY_S)  # what the old ClientCredentials did inside the async client  # noqa: ASYNC251
    await asyncio.sleep(TICK_S * 3)
    stop.set()
    await asyncio.wait_for(ticking, 5)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) >= DELAY_S * 0.9
