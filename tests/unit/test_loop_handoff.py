"""`piigate.transport.bridge.LoopHandoff`: coroutines handed from threads to one event
loop, their outcomes handed back; calls handed over while a wake-up is pending share it;
a call cancelled before it starts never runs and leaves the queue; a closed loop refuses
at once. (The bridge around it is tested through a real grpc server in
tests/integration/test_bridge.py.)"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from piigate.transport.bridge import LoopHandoff

GUARD_S = 10.0  # bounds every wait; no assertion depends on it


class CountingLoop:
    """A real loop on its own thread, counting the wake-ups handed to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.wakeups = 0
        original = self.loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
            self.wakeups += 1
            return original(callback, *args, context=context)

        self.loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GUARD_S)
        self.loop.close()


@pytest.fixture
def running() -> Iterator[CountingLoop]:
    loop = CountingLoop()
    yield loop
    loop.stop()


async def _double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def _fail() -> int:
    raise ValueError("boom")


def test_results_and_errors_come_back_to_the_thread(running: CountingLoop) -> None:
    handoff = LoopHandoff(running.loop)
    handed = handoff.submit(_double(21))
    assert handed.wait(GUARD_S)
    assert (handed.result, handed.error, handed.cancelled) == (42, None, False)
    failed = handoff.submit(_fail())
    assert failed.wait(GUARD_S)
    assert isinstance(failed.error, ValueError)
    assert failed.result is None


def test_calls_handed_over_while_the_loop_is_busy_share_one_wakeup(
    running: CountingLoop,
) -> None:
    handoff = LoopHandoff(running.loop)
    gate = threading.Event()
    blocked = handoff.submit(asyncio.to_thread(gate.wait, GUARD_S))  # started at once
    assert running.wakeups == 1
    # Hold the loop itself busy, so that the next submissions find a wake-up pending.
    busy = threading.Event()
    running.loop.call_soon_threadsafe(lambda: busy.wait(GUARD_S))
    before = running.wakeups
    results = [handoff.submit(_double(i)) for i in range(50)]
    busy.set()
    gate.set()
    assert all(h.wait(GUARD_S) for h in results)
    assert blocked.wait(GUARD_S)
    assert [h.result for h in results] == [2 * i for i in range(50)]
    assert running.wakeups - before <= 2  # the loop's own callback, and one for all 50


@pytest.mark.parametrize("before_its_task", [True, False])
def test_a_call_cancelled_before_it_starts_never_runs(
    running: CountingLoop, before_its_task: bool
) -> None:
    """Cancelled before the loop made its task (the flag), or after but before the task's
    first step (the task's own cancel): either way the coroutine never runs, and `on_end`
    still runs, so the bridge's queue count comes back down."""
    handoff = LoopHandoff(running.loop)
    busy, ran, ended = threading.Event(), threading.Event(), threading.Event()
    running.loop.call_soon_threadsafe(lambda: busy.wait(GUARD_S))

    async def work() -> int:
        ran.set()
        return 1

    first = None
    if before_its_task:
        first = handoff.submit(_double(0))  # the loop's wake-up is taken: the next rides on it
        handed = handoff.submit(work(), ended.set)
        handed._cancel_on_loop()  # what `cancel` runs there, before the pending start
    else:
        handed = handoff.submit(work(), ended.set)
        handed.cancel()  # queued behind the start, which the busy loop has not reached
    busy.set()
    assert handed.wait(GUARD_S)
    assert handed.cancelled
    assert ended.is_set()
    assert not ran.is_set()
    assert first is None or (first.wait(GUARD_S) and first.result == 0)


def test_a_started_call_is_cancelled_on_the_loop(running: CountingLoop) -> None:
    handoff = LoopHandoff(running.loop)
    started = threading.Event()

    async def linger() -> int:
        started.set()
        await asyncio.sleep(GUARD_S)
        return 1

    ended = threading.Event()
    handed = handoff.submit(linger(), ended.set)
    assert started.wait(GUARD_S)
    assert not handed.wait(0.01)  # still running
    handed.cancel()
    assert handed.wait(GUARD_S)
    assert handed.cancelled
    assert ended.is_set()


def test_a_closed_loop_refuses_at_once() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    coroutine = _double(1)
    with pytest.raises(RuntimeError):
        LoopHandoff(loop).submit(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # no "never awaited"


def test_many_threads_each_get_their_own_answer(running: CountingLoop) -> None:
    handoff = LoopHandoff(running.loop)
    answers: dict[int, list[int | None]] = {}

    def client(n: int) -> None:
        got: list[int | None] = []
        for i in range(200):
            handed = handoff.submit(_double(n * 1000 + i))
            assert handed.wait(GUARD_S)
            got.append(handed.result)
        answers[n] = got

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD_S)
    assert answers == {n: [2 * (n * 1000 + i) for i in range(200)] for n in range(8)}
