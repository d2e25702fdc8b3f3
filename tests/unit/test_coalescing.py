"""Coalescing: shared vault calls whose answers never mix, errors that reach the right
callers, and deadlines kept per caller. Correctness only; speed is `make bench`'s job."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from piigate.errors import VaultTimeout, VaultUnavailable
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import CoalescingVault


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


async def test_requests_gather_while_a_call_is_out_and_never_mix() -> None:
    vault = FakeVault(delay_s=0.05)
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    answers = await asyncio.gather(*(coalescer.detokenize(query(f"t{i}"), 2) for i in range(10)))
    # The first goes at once; the other nine gather and go when it comes back.
    assert [c.token_ids for c in vault.calls] == [("t0",), tuple(f"t{i}" for i in range(1, 10))]
    for i, answer in enumerate(answers):
        assert answer == {f"t{i}": {"ssn.mask": f"masked-t{i}"}}


async def test_a_lone_request_is_sent_at_once() -> None:
    vault = FakeVault(delay_s=0.05)
    coalescer = CoalescingVault(vault, max_wait_s=5)
    pending = asyncio.create_task(coalescer.detokenize(query("t1"), 2))
    await asyncio.sleep(0.01)  # far less than the 5 s wait: only "send at once" explains it
    assert [c.token_ids for c in vault.calls] == [("t1",)]
    assert await pending == {"t1": {"ssn.mask": "masked-t1"}}


async def test_a_lone_request_keeps_its_deadline_and_frees_its_shape() -> None:
    vault = FakeVault(delay_s=5)  # ignores the timeout it is given
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    with pytest.raises(VaultTimeout):
        await asyncio.wait_for(coalescer.detokenize(query("t1"), 0.05), 2)
    # The timed-out call no longer counts as under way: the next request goes at once.
    vault.delay_s = 0
    assert await asyncio.wait_for(coalescer.detokenize(query("t2"), 1), 2) == {
        "t2": {"ssn.mask": "masked-t2"}
    }
    assert [c.token_ids for c in vault.calls] == [("t1",), ("t2",)]


async def test_identical_tokens_share_one_lookup_and_unknown_ids_stay_absent() -> None:
    vault = FakeVault(delay_s=0.05)
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    _, a, b, c = await asyncio.gather(coalescer.detokenize(query("t0"), 2),
                                      coalescer.detokenize(query("t1"), 2),
                                      coalescer.detokenize(query("t1"), 2),
                                      coalescer.detokenize(query("unknown"), 2))
    assert vault.calls[1].token_ids == ("t1", "unknown")
    assert a == b == {"t1": {"ssn.mask": "masked-t1"}}
    assert c == {}


async def test_different_shapes_are_never_merged() -> None:
    vault = FakeVault(delay_s=0.05)
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    await asyncio.gather(
        *(coalescer.detokenize(query("t0", props=p), 2) for p in (("ssn.mask",), ("ssn",))),
        coalescer.detokenize(query("t1"), 2),
        coalescer.detokenize(query("t2", props=("ssn",)), 2),
        coalescer.detokenize(query("t3", key="other-profile-key"), 2),
        coalescer.detokenize(dataclasses.replace(query("t4"), tags=("piigate-sub-x",)), 2),
    )
    assert sorted(c.token_ids for c in vault.calls) == [
        ("t0",), ("t0",), ("t1",), ("t2",), ("t3",), ("t4",)]


async def test_size_cap_sends_a_full_batch_without_waiting() -> None:
    vault = FakeVault(delay_s=0.5)
    coalescer = CoalescingVault(vault, max_wait_s=5, max_batch=2, max_inflight=1)
    first = asyncio.create_task(coalescer.detokenize(query("t0"), 5))
    await asyncio.sleep(0)
    rest = asyncio.gather(coalescer.detokenize(query("t1"), 5),
                          coalescer.detokenize(query("t2"), 5))
    await asyncio.sleep(0.05)  # the first call is still out; the full batch went anyway
    assert [c.token_ids for c in vault.calls] == [("t0",), ("t1", "t2")]
    await asyncio.wait_for(asyncio.gather(first, rest), 5)


async def test_a_batch_failure_reaches_each_member() -> None:
    vault = FakeVault(delay_s=0.01, error=VaultUnavailable())
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    results = await asyncio.gather(*(coalescer.detokenize(query(f"t{i}"), 2) for i in range(4)),
                                   return_exceptions=True)
    assert all(isinstance(r, VaultUnavailable) for r in results)
    assert len(vault.calls) == 2  # the first alone, the other three together


async def test_each_caller_keeps_its_own_deadline() -> None:
    vault = FakeVault(delay_s=0.5)
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    first = asyncio.create_task(coalescer.detokenize(query("t0"), 5))
    await asyncio.sleep(0)
    hurried = asyncio.create_task(coalescer.detokenize(query("t1"), 0.1))
    patient = asyncio.create_task(coalescer.detokenize(query("t2"), 5))
    with pytest.raises(VaultTimeout):
        await hurried
    assert await asyncio.wait_for(patient, 5) == {"t2": {"ssn.mask": "masked-t2"}}
    assert await first == {"t0": {"ssn.mask": "masked-t0"}}
    # The shared call went on for the patient caller after the hurried one gave up.
    assert [c.token_ids for c in vault.calls] == [("t0",), ("t1", "t2")]


async def test_the_wait_bounds_a_batch_when_calls_stay_out() -> None:
    vault = FakeVault(delay_s=1.0)
    coalescer = CoalescingVault(vault, max_wait_s=0.02, max_inflight=1)
    first = asyncio.create_task(coalescer.detokenize(query("t0"), 5))
    await asyncio.sleep(0)
    second = asyncio.create_task(coalescer.detokenize(query("t1"), 5))
    await asyncio.sleep(0.2)  # well past the 20 ms wait, well before the 1 s call returns
    assert [c.token_ids for c in vault.calls] == [("t0",), ("t1",)]
    await asyncio.wait_for(asyncio.gather(first, second), 5)
