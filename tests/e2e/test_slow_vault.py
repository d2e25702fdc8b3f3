"""A slow vault: the call's budget is respected, and a graceful stop lets in-flight
calls finish. The slowness comes from a delaying proxy in front of the real vault."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate_client.errors import DeadlineExceeded
from tests.support.heap import frozen_heap
from tests.support.stack import running_stack


@asynccontextmanager
async def delaying_proxy(delay_s: float) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP proxy that waits `delay_s` before forwarding to the URL it is later given."""
    upstream: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        async with aiohttp.ClientSession() as http, http.request(
            request.method, upstream[0] + request.path_qs, headers=request.headers,
            data=await request.read(),
        ) as answer:
            return web.Response(
                body=await answer.read(), status=answer.status,
                content_type=answer.content_type,
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner, url = await start_http_app(app, ListenAddress("127.0.0.1", 0))
    try:
        yield url, upstream
    finally:
        await runner.cleanup()


async def test_slow_vault_answers_deadline_exceeded_within_the_server_budget() -> None:
    async with delaying_proxy(2.0) as (proxy, upstream), running_stack(
        vault_url=proxy, gateway_overrides={"server": {"request_timeout_ms": 300}}
    ) as stack:
        upstream.append(stack.vault.base_url)
        support = await stack.caller("support-tool")
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeadlineExceeded) as caught:
            await support.detokenize(stack.user_token("alice"), timeout_s=10)
        assert caught.value.reason == "VAULT_TIMEOUT"
        # Not a speed assertion: the 10 s client deadline was not what ended the call.
        assert asyncio.get_running_loop().time() - started < 10
        assert stack.audit_events()[-1]["error_reason"] == "VAULT_TIMEOUT"


async def test_more_calls_than_handler_threads_each_get_their_own_answer() -> None:
    """A handler thread holds its call until the answer, so with a slow vault the calls
    beyond `handler_threads` wait their turn: each still ends with the gateway's own
    VAULT_TIMEOUT (and its audit event), none with a bare status or a hang."""
    threads, calls = 2, 7
    async with delaying_proxy(2.0) as (proxy, upstream), running_stack(
        vault_url=proxy,
        gateway_overrides={"server": {"request_timeout_ms": 200, "handler_threads": threads}},
    ) as stack:
        upstream.append(stack.vault.base_url)
        support = await stack.caller("support-tool")
        token = stack.user_token("alice")
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(support.detokenize(token, timeout_s=30) for _ in range(calls)),
                return_exceptions=True,
            ),
            30,
        )
        assert all(isinstance(o, DeadlineExceeded) for o in outcomes), outcomes
        assert {o.reason for o in outcomes if isinstance(o, DeadlineExceeded)} == {
            "VAULT_TIMEOUT"
        }
        reasons = [e["error_reason"] for e in stack.audit_events()[-calls:]]
        assert reasons == ["VAULT_TIMEOUT"] * calls


async def test_graceful_stop_lets_in_flight_calls_finish() -> None:
    async with delaying_proxy(0.5) as (proxy, upstream), running_stack(vault_url=proxy) as stack:
        upstream.append(stack.vault.base_url)
        support = await stack.caller("support-tool")
        in_flight = asyncio.create_task(support.detokenize(stack.user_token("alice")))
        await asyncio.sleep(0.2)  # the call is now waiting on the vault
        await stack.gateway.stop(grace_s=5)
        result = await in_flight
        assert result["ssn"].value == "***-**-1234"


@pytest.mark.parametrize("delay_s", [4.0, 2.05], ids=["hangs", "answers-just-late"])
async def test_a_vault_slower_than_the_callers_deadline_gets_the_gateways_own_answer(
    delay_s: float,
) -> None:
    """Client deadline 2 s and vault timeout 2 s: the vault's budget keeps a reserve for
    the gateway's answer and audit write, so the caller gets VAULT_TIMEOUT with its
    ErrorInfo, not a bare DEADLINE_EXCEEDED, and each call has its audit event. The
    heap is frozen as a gateway process freezes its own (see tests/support/heap.py)."""
    with frozen_heap():
        await _three_calls_past_the_deadline(delay_s)


async def _three_calls_past_the_deadline(delay_s: float) -> None:
    async with delaying_proxy(delay_s) as (proxy, upstream), running_stack(
        vault_url=proxy, gateway_overrides={"vault": {"timeout_ms": 2000}},
    ) as stack:
        upstream.append(stack.vault.base_url)
        support = await stack.caller("support-tool")
        before = len(stack.audit_events())
        token = stack.user_token("alice")
        outcomes = await asyncio.wait_for(asyncio.gather(
            *(support.detokenize(token, timeout_s=2.0) for _ in range(3)),
            return_exceptions=True), 30)
        assert [getattr(o, "reason", o) for o in outcomes] == ["VAULT_TIMEOUT"] * 3
        events = stack.audit_events()[before:]
        assert [e["error_reason"] for e in events] == ["VAULT_TIMEOUT"] * 3
