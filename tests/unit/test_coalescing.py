"""Coalescing: shared vault calls whose answers never mix, errors that reach the right
callers, and deadlines kept per caller. Correctness only; speed is `make bench`'s job."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from piigate.coalescing import CoalescingVault
from piigate.errors import VaultTimeout, VaultUnavailable
from piigate.vault import DetokenizeQuery


class FakeVault:
    """Answers every asked id with fields naming that id; records each call."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.calls: list[DetokenizeQuery] = []
        self.delay_s, self.error = delay_s, error

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float
                         ) -> dict[str, Mapping[str, Any]]:
        self.calls.append(query)
        await asyncio.sleep(self.delay_s)
        if self.error:
            raise self.error
        return {t: {"ssn.mask": f"masked-{t}"} for t in query.token_ids if t != "unknown"}


def query(
    *token_ids: str, props: tuple[str, ...] = ("ssn.mask",), key: str = "k"
) -> DetokenizeQuery:
    return DetokenizeQuery("users", token_ids, props, "AccountManagement", None, key)


async def test_concurrent_requests_share_one_call_and_never_mix() -> None:
    vault = FakeVault()
    coalescer = CoalescingVault(vault, max_wait_s=0.01)
    answers = await asyncio.gather(*(coalescer.detokenize(query(f"t{i}"), 2) for i in range(10)))
    assert len(vault.calls) == 1
    assert set(vault.calls[0].token_ids) == {f"t{i}" for i in range(10)}
    for i, answer in enumerate(answers):
        assert answer == {f"t{i}": {"ssn.mask": f"masked-t{i}"}}


async def test_identical_tokens_share_one_lookup_and_unknown_ids_stay_absent() -> None:
    vault = FakeVault()
    coalescer = CoalescingVault(vault, max_wait_s=0.01)
    a, b, c = await asyncio.gather(coalescer.detokenize(query("t1"), 2),
                                   coalescer.detokenize(query("t1"), 2),
                                   coalescer.detokenize(query("unknown"), 2))
    assert vault.calls[0].token_ids == ("t1", "unknown")
    assert a == b == {"t1": {"ssn.mask": "masked-t1"}}
    assert c == {}


async def test_different_shapes_are_never_merged() -> None:
    vault = FakeVault()
    coalescer = CoalescingVault(vault, max_wait_s=0.01)
    await asyncio.gather(
        coalescer.detokenize(query("t1"), 2),
        coalescer.detokenize(query("t2", props=("ssn",)), 2),
        coalescer.detokenize(query("t3", key="other-profile-key"), 2),
        coalescer.detokenize(dataclasses.replace(query("t4"), tags=("piigate-sub-x",)), 2),
    )
    assert sorted(c.token_ids for c in vault.calls) == [("t1",), ("t2",), ("t3",), ("t4",)]


async def test_size_cap_sends_a_full_batch_at_once() -> None:
    vault = FakeVault()
    coalescer = CoalescingVault(vault, max_wait_s=10.0, max_batch=2)
    # With a 10 s wait, only the size cap can send the first two before the test ends.
    first = asyncio.gather(coalescer.detokenize(query("t1"), 20),
                           coalescer.detokenize(query("t2"), 20))
    assert await asyncio.wait_for(first, 2) == [{"t1": {"ssn.mask": "masked-t1"}},
                                                {"t2": {"ssn.mask": "masked-t2"}}]
    assert vault.calls[0].token_ids == ("t1", "t2")


async def test_a_lone_request_is_sent_after_the_wait() -> None:
    vault = FakeVault()
    coalescer = CoalescingVault(vault, max_wait_s=0.001)
    assert await asyncio.wait_for(coalescer.detokenize(query("t1"), 2), 2) == {
        "t1": {"ssn.mask": "masked-t1"}}
    assert coalescer.vault_calls == 1


async def test_a_batch_failure_reaches_each_member() -> None:
    vault = FakeVault(error=VaultUnavailable())
    coalescer = CoalescingVault(vault, max_wait_s=0.01)
    results = await asyncio.gather(*(coalescer.detokenize(query(f"t{i}"), 2) for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, VaultUnavailable) for r in results)
    assert len(vault.calls) == 1


async def test_each_caller_keeps_its_own_deadline() -> None:
    vault = FakeVault(delay_s=0.5)
    coalescer = CoalescingVault(vault, max_wait_s=0.01)
    hurried = asyncio.create_task(coalescer.detokenize(query("t1"), 0.1))
    patient = asyncio.create_task(coalescer.detokenize(query("t2"), 5))
    with pytest.raises(VaultTimeout):
        await hurried
    assert await asyncio.wait_for(patient, 5) == {"t2": {"ssn.mask": "masked-t2"}}
    assert len(vault.calls) == 1  # the shared call went on for the patient caller
