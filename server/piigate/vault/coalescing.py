"""Coalescing vault calls: concurrent detokenize requests that could share one vault call
(same collection, properties, reason, key and tags) are sent as one request with many
`token_ids`, and the answer is split back per caller.

Rules:

1. A request whose shape has fewer than `max_inflight` vault calls under way is sent at
   once, with whatever company has gathered (a lone request never waits). Otherwise it
   joins the open batch of its shape, which is sent when a call of that shape finishes,
   when it reaches `max_batch` distinct token ids, or after `max_wait_s`, whichever comes
   first. Under load, batches form by themselves while earlier calls are out, without a
   timer on the idle path (asyncio timers round to the millisecond).
2. Identical token ids in flight share one lookup.
3. Every caller keeps its own deadline: it stops waiting when its own budget is spent
   (VAULT_TIMEOUT) while the shared call goes on for the others; the shared call's own
   timeout is the longest budget among its members.
4. A batch's failure is each member's failure; answers never mix: a caller sees only the
   token ids it asked for (the vault stage already refuses answers for ids nobody asked).
   A request by tags alone (no token ids: a named subject) shares only with requests by
   the very same tags, and each of them sees the whole answer: it is what the tags select.
5. With tracing on, a shared call carries every member's vault span: the first member's
   is its span's parent, the others are links (`piigate.telemetry.tracing`).

`MeasuredVault` sits between this and the client: it times every call that reaches the
vault (a coalesced call once) for the metric `piigate_vault_request_duration_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from piigate.errors import GatewayError, VaultTimeout
from piigate.vault.client import DetokenizeQuery

Answer = dict[str, Mapping[str, Any]]


class Vault(Protocol):
    async def detokenize(self, query: DetokenizeQuery, timeout_s: float) -> Answer: ...


@dataclass
class _Batch:
    query: DetokenizeQuery  # the shared shape; token_ids filled in at send time
    ids: dict[str, None] = field(default_factory=dict)  # ordered set of token ids
    timeout_s: float = 0.0
    done: asyncio.Future[Answer] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    timer: asyncio.TimerHandle | None = None
    trace: list[Any] = field(default_factory=list)  # every member's vault span (tracing)


class CoalescingVault:
    """Wraps a vault client; same `detokenize(query, timeout_s)` interface."""

    def __init__(
        self, vault: Vault, max_wait_s: float = 0.002, max_batch: int = 64, max_inflight: int = 2
    ) -> None:
        self._vault = vault
        self._max_wait_s = max_wait_s
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._open: dict[tuple[object, ...], _Batch] = {}
        self._inflight: dict[tuple[object, ...], int] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.vault_calls = 0  # for the benchmark's "vault calls per gateway call"

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float) -> Answer:
        key = _shape(query)
        batch = self._open.get(key)
        if batch is None and self._inflight.get(key, 0) < self._max_inflight:
            return await self._alone(key, query, timeout_s)
        if batch is None:
            batch = _Batch(dataclasses.replace(query, token_ids=()))
            self._open[key] = batch
        batch.ids.update(dict.fromkeys(query.token_ids))
        if query.trace:
            batch.trace += query.trace
        batch.timeout_s = max(batch.timeout_s, timeout_s)
        if self._inflight.get(key, 0) < self._max_inflight or len(batch.ids) >= self._max_batch:
            self._send(key, batch)
        elif batch.timer is None:
            batch.timer = asyncio.get_running_loop().call_later(
                self._max_wait_s, self._send, key, batch
            )
        try:
            answer = await asyncio.wait_for(asyncio.shield(batch.done), timeout_s)
        except TimeoutError as exc:
            raise VaultTimeout() from exc
        if not query.token_ids:  # by tags alone (rule 4)
            return dict(answer)
        return {t: answer[t] for t in query.token_ids if t in answer}

    async def _alone(self, key: tuple[object, ...], query: DetokenizeQuery,
                     timeout_s: float) -> Answer:
        """Rule 1's common case, a request with no company: it makes its own call in its
        own task, under its own deadline (no shared future, no extra task). It still
        counts as a call under way, so others of its shape gather behind it."""
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self.vault_calls += 1
        try:
            async with asyncio.timeout(timeout_s):  # rule 3, whatever the client does
                return await self._vault.detokenize(query, timeout_s)
        except TimeoutError as exc:
            raise VaultTimeout() from exc
        finally:
            self._finished(key)

    def _finished(self, key: tuple[object, ...]) -> None:
        """A call of shape `key` is over: send what gathered behind it."""
        self._inflight[key] -= 1
        if not self._inflight[key]:
            del self._inflight[key]
        waiting = self._open.get(key)
        if waiting is not None:
            self._send(key, waiting)

    def _send(self, key: tuple[object, ...], batch: _Batch) -> None:
        if self._open.get(key) is not batch:
            return  # already sent (size cap reached before the timer fired)
        del self._open[key]
        if batch.timer is not None:
            batch.timer.cancel()
        self._inflight[key] = self._inflight.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._call(key, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _call(self, key: tuple[object, ...], batch: _Batch) -> None:
        self.vault_calls += 1
        query = dataclasses.replace(batch.query, token_ids=tuple(batch.ids),
                                    trace=tuple(batch.trace))
        try:
            answer = await self._vault.detokenize(query, batch.timeout_s)
        except GatewayError as exc:
            batch.done.set_exception(exc)
        except Exception as exc:  # an unexpected failure still reaches every member
            batch.done.set_exception(exc)
        else:
            batch.done.set_result(answer)
        finally:
            self._finished(key)  # sends what gathered while this call was out
        # Members that already gave up on their deadline never retrieve the outcome.
        batch.done.exception()

    async def aclose(self) -> None:
        for task in list(self._sending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class MeasuredVault:
    """Times each vault call: `observe(outcome, seconds)`, the outcome "ok", the failure's
    label (`outcome_of(reason)`), "error" for anything unexpected, or "cancelled".

    A call cut off once its budget is spent is a timeout, whoever cut it: rule 3's own
    bound starts a moment before the client's and so fires first, and this layer then
    sees a cancellation, not the client's VaultTimeout. Only one cancelled before its
    budget ran out (the caller left, the gateway is stopping) is "cancelled"."""

    # A cancellation this close to the budget is the budget's (the two bounds start
    # microseconds apart; timers fire within the loop's clock resolution).
    BUDGET_SLACK_S = 0.001

    def __init__(self, vault: Vault, observe: Callable[[str, float], None],
                 outcome_of: Callable[[str], str]) -> None:
        self._vault = vault
        self._observe = observe
        self._outcome_of = outcome_of

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float) -> Answer:
        started = time.perf_counter()
        try:
            answer = await self._vault.detokenize(query, timeout_s)
        except GatewayError as exc:
            self._observe(self._outcome_of(exc.reason), time.perf_counter() - started)
            raise
        except asyncio.CancelledError:
            elapsed = time.perf_counter() - started
            spent = elapsed >= timeout_s - self.BUDGET_SLACK_S
            self._observe(self._outcome_of(VaultTimeout.reason) if spent else "cancelled",
                          elapsed)
            raise
        except Exception:
            self._observe("error", time.perf_counter() - started)
            raise
        self._observe("ok", time.perf_counter() - started)
        return answer


def _shape(query: DetokenizeQuery) -> tuple[object, ...]:
    """Everything that must match for two requests to share one vault call. The request
    reference (custom_audit) is not part of it: a shared call carries the first's."""
    return (query.collection, query.props, query.reason, query.adhoc_reason, query.api_key,
            query.tags, query.purpose, not query.token_ids)
