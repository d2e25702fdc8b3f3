"""Key rotation at the issuer, seen through the gateway: a key rotated in right after
start-up is picked up at once, a later one after the unknown-kid cooldown; tokens signed by
the old key keep working until the old key leaves the published set, and then (cached or
not) they stop."""

from __future__ import annotations

import asyncio

import pytest

from piigate_client.errors import Unauthenticated
from tests.support.stack import running_stack


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_rotation_then_retirement() -> None:
    clock = Clock()
    async with running_stack(clock=clock) as stack:
        support = await stack.caller("support-tool")
        old_token = stack.user_token("alice", lifetime_s=3000)
        assert (await support.detokenize(old_token))["ssn"].value == "***-**-1234"

        # The set came from the start-up fetch: the first unknown kid refetches at once,
        # so a rotation right after the gateway started does not refuse new tokens.
        await stack.issuer.rotate()
        new_token = stack.user_token("bob", lifetime_s=3000)
        assert (await support.detokenize(new_token))["ssn"].value == "***-**-4321"

        # Within the unknown-kid cooldown after that fetch the gateway does not refetch
        # (a flood of random kids must cost one fetch, not thousands).
        await stack.issuer.rotate()
        newer_token = stack.user_token("bob", lifetime_s=3000)
        with pytest.raises(Unauthenticated) as caught:
            await support.detokenize(newer_token)
        assert caught.value.reason == "TOKEN_KEY_UNKNOWN"
        clock.now += 31
        assert (await support.detokenize(newer_token))["ssn"].value == "***-**-4321"
        assert (await support.detokenize(old_token))["ssn"].value == "***-**-1234"

        # The caller's own credential was signed by an old key too: it fetches a new one,
        # as a client-credentials client does before its token expires.
        support = await stack.caller("support-tool")
        await stack.issuer.retire()
        clock.now += 301  # past the JWKS max-age the dev issuer publishes
        # The next use is answered from the expired set at once and refreshes it beside
        # (a refresh never holds a request); the refreshed set no longer holds old keys.
        assert (await support.detokenize(newer_token))["ssn"].value == "***-**-4321"
        refused = None
        for _ in range(100):  # bounded: the refresh is one loopback round trip
            try:
                await support.detokenize(old_token)  # verified before, cached
            except Unauthenticated as exc:
                refused = exc
                break
            await asyncio.sleep(0.02)
        assert refused is not None, "the retired key was never dropped"
        assert refused.reason == "TOKEN_KEY_UNKNOWN"  # dies with its key
        assert refused.metadata["token_role"] == "subject"
        assert (await support.detokenize(newer_token))["ssn"].value == "***-**-4321"
