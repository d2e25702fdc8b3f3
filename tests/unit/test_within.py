"""`piigate.pipeline._within`, a stage bounded by the call's deadline: a stage that
finishes without suspending (a cached token, known keys) runs without a timer; one that
suspends is bounded, and running out is ISSUER_KEYS_UNAVAILABLE; the stage's own results,
errors and the caller's cancellation pass through unchanged; on both event loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from piigate.errors import IssuerKeysUnavailable
from piigate.pipeline import _within

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(make_loop: Callable[[], asyncio.AbstractEventLoop],
        main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop = make_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        loop.close()


async def _suspends(value: int, delay_s: float = 0.01) -> int:
    await asyncio.sleep(0)
    await asyncio.sleep(delay_s)
    return value


async def _suspends_then_raises() -> int:
    await asyncio.sleep(0.01)
    raise ValueError("the stage's own")


async def _raises_timeout_at_once() -> int:
    raise TimeoutError


async def _lingers_after_cancel() -> int:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)  # still suspends while it winds down
        raise
    return 0


async def _at_once() -> int:
    return 3


@pytest.mark.parametrize("make_loop", LOOPS.values(), ids=LOOPS.keys())
def test_results_and_errors_pass_through(
    make_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        deadline = asyncio.get_running_loop().time() + 5
        assert await _within(deadline, _at_once()) == 3
        assert await _within(deadline, _suspends(5)) == 5
        with pytest.raises(ValueError, match="the stage's own"):
            await _within(deadline, _suspends_then_raises())
        with pytest.raises(IssuerKeysUnavailable):  # as before: a TimeoutError is the budget's
            await _within(deadline, _raises_timeout_at_once())

    run(make_loop, main)


@pytest.mark.parametrize("make_loop", LOOPS.values(), ids=LOOPS.keys())
def test_a_stage_that_suspends_past_the_deadline_is_cut_short(
    make_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(IssuerKeysUnavailable):
            await _within(loop.time() + 0.05, _suspends(1, delay_s=10))
        assert loop.time() - started < 5
        with pytest.raises(IssuerKeysUnavailable):  # the cancellation reached the stage
            await _within(loop.time() + 0.05, _lingers_after_cancel())
        with pytest.raises(IssuerKeysUnavailable):  # already past: cut at its first wait
            await _within(loop.time() - 1, _suspends(1))
        # Already past but done without waiting: nothing to cut short, as before.
        assert await _within(loop.time() - 1, _at_once()) == 3

    run(make_loop, main)


@pytest.mark.parametrize("make_loop", LOOPS.values(), ids=LOOPS.keys())
def test_the_callers_cancellation_goes_through(
    make_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def main() -> None:
        deadline = asyncio.get_running_loop().time() + 5
        task = asyncio.ensure_future(_within(deadline, _suspends(1, delay_s=10)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(make_loop, main)


@pytest.mark.parametrize("make_loop", LOOPS.values(), ids=LOOPS.keys())
def test_no_timer_for_a_stage_that_does_not_suspend(
    make_loop: Callable[[], asyncio.AbstractEventLoop], monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[float] = []
    real = asyncio.timeout_at

    def counting(when: float | None) -> asyncio.Timeout:
        made.append(when or 0.0)
        return real(when)

    monkeypatch.setattr(asyncio, "timeout_at", counting)

    async def main() -> None:
        deadline = asyncio.get_running_loop().time() + 5
        assert await _within(deadline, _at_once()) == 3
        assert made == []
        assert await _within(deadline, _suspends(2)) == 2
        assert made == [deadline]

    run(make_loop, main)
