"""Key rotation at the issuer, seen through the gateway: a new key is picked up after the
unknown-kid cooldown, tokens signed by the old key keep working until the old key leaves
the published set, and then (cached or not) they stop."""

from __future__ import annotations

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

        await stack.issuer.rotate()
        new_token = stack.user_token("bob", lifetime_s=3000)
        # Within the unknown-kid cooldown the gateway does not refetch (a flood of random
        # kids must cost one fetch, not thousands).
        with pytest.raises(Unauthenticated) as caught:
            await support.detokenize(new_token)
        assert caught.value.reason == "TOKEN_KEY_UNKNOWN"
        clock.now += 31
        assert (await support.detokenize(new_token))["ssn"].value == "***-**-4321"
        assert (await support.detokenize(old_token))["ssn"].value == "***-**-1234"

        # The caller's own credential was signed by the old key too: it fetches a new one,
        # as a client-credentials client does before its token expires.
        support = await stack.caller("support-tool")
        await stack.issuer.retire()
        clock.now += 301  # past the JWKS max-age the dev issuer publishes
        # The next use refreshes the set, which no longer holds the old key.
        assert (await support.detokenize(new_token))["ssn"].value == "***-**-4321"
        with pytest.raises(Unauthenticated) as caught:
            await support.detokenize(old_token)  # verified before, cached: dies with its key
        assert caught.value.reason == "TOKEN_KEY_UNKNOWN"
        assert caught.value.metadata["token_role"] == "subject"
