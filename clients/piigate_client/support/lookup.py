"""The run: customers in, one `Outcome` per customer out, in input order.

The customers go out in chunks (`plan`, which splits by the gateway's batch size and its
message limit); each chunk is one BatchDetokenize call. What may be retried is retried
after the delay `retry.retry_delay` gives: a whole call, or the customers in it whose
own answer was a rate limit. A gateway that answers BATCH_TOO_LARGE with a smaller `max`
than was assumed gets the rest re-planned at its size, once per smaller size.

A call that fails for good (the caller credential refused, the gateway unavailable past
its retries) ends the run: the customers not yet answered get that failure as their
outcome, and `Report.call_failure` says the run was cut short.

No I/O here: the gateway, the sleep and the progress callback are passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from piigate_client.client import Field
from piigate_client.support.customers import Customer
from piigate_client.support.retry import RetryPolicy, retry_delay

BATCH_TOO_LARGE = "BATCH_TOO_LARGE"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a customer (or a whole call) got no data. `code` is the gRPC status code's
    name, or `TOKEN_ENDPOINT` when the caller's own credential could not be had; `reason`
    is piigate's ErrorInfo reason (or the token endpoint's OAuth error code)."""

    code: str
    reason: str
    request_id: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Found:
    """What the profile disclosed for a customer, each field with its disclosure kind."""

    customer: Customer
    fields: tuple[Field, ...]
    request_id: str


@dataclass(frozen=True, slots=True)
class Failed:
    """A customer that got no data, and why."""

    customer: Customer
    failure: Failure


Outcome = Found | Failed


class CallFailed(Exception):
    """A call failed as a whole. `batch_max` is the gateway's batch size when it said
    BATCH_TOO_LARGE (its ErrorInfo `max`)."""

    def __init__(self, failure: Failure, batch_max: int | None = None) -> None:
        super().__init__(f"{failure.code} {failure.reason}")
        self.failure = failure
        self.batch_max = batch_max


class Gateway(Protocol):
    """One BatchDetokenize call for `customers`: an outcome each, in order. Raises
    `CallFailed` when the call itself fails."""

    def lookup(self, customers: Sequence[Customer]) -> list[Outcome]: ...


# Split customers into calls of at most `max_items` each (and within the message limit).
Plan = Callable[[Sequence[Customer], int], Sequence[Sequence[Customer]]]


@dataclass(frozen=True, slots=True)
class Report:
    """Every customer's outcome in input order; `call_failure` when the run was cut short."""

    outcomes: tuple[Outcome, ...]
    call_failure: Failure | None = None


def run(
    customers: Sequence[Customer],
    gateway: Gateway,
    plan: Plan,
    *,
    max_items: int,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    advance: Callable[[int], None] = lambda n: None,
) -> Report:
    """Look every customer up; never raises for a gateway's answer."""
    done: list[Outcome] = []
    while len(done) < len(customers):
        pending = customers[len(done):]
        for chunk in _checked(plan(pending, max_items), pending):
            try:
                outcomes, failure = _settle(chunk, gateway, policy, sleep, advance)
            except _Replan as exc:
                max_items = exc.max_items
                break  # re-plan what is left at the gateway's size
            done.extend(outcomes)
            if failure is not None:
                rest = customers[len(done):]
                advance(len(rest))
                done.extend(Failed(customer, failure) for customer in rest)
                return Report(tuple(done), failure)
    return Report(tuple(done))


class _Replan(Exception):
    def __init__(self, max_items: int) -> None:
        super().__init__(max_items)
        self.max_items = max_items


def _settle(
    chunk: Sequence[Customer], gateway: Gateway, policy: RetryPolicy,
    sleep: Callable[[float], None], advance: Callable[[int], None],
) -> tuple[list[Outcome], Failure | None]:
    """One chunk's outcomes: the call, then again for the customers worth retrying. A
    call that fails for good fails the customers not yet settled, and is returned."""
    settled: dict[int, Outcome] = {}
    todo = list(range(len(chunk)))
    attempt = 1
    failure: Failure | None = None
    while todo:
        try:
            answers = gateway.lookup([chunk[i] for i in todo])
        except CallFailed as exc:
            if exc.batch_max is not None and 0 < exc.batch_max < len(todo) and not settled:
                raise _Replan(exc.batch_max) from None
            delay = (None if exc.batch_max is not None else
                     retry_delay(exc.failure.code, exc.failure.retry_after_s, attempt, policy))
            if delay is None:
                failure = exc.failure
                settled.update((i, Failed(chunk[i], failure)) for i in todo)
                advance(len(todo))
                break
            sleep(delay)
            attempt += 1
            continue
        again: list[int] = []
        delays: list[float] = []
        for i, answer in zip(todo, answers, strict=True):
            delay = (retry_delay(answer.failure.code, answer.failure.retry_after_s, attempt,
                                 policy) if isinstance(answer, Failed) else None)
            if delay is None:
                settled[i] = answer
            else:
                again.append(i)
                delays.append(delay)
        advance(len(todo) - len(again))
        if again:
            sleep(max(delays))
            attempt += 1
        todo = again
    return [settled[i] for i in range(len(chunk))], failure


def _checked(
    chunks: Sequence[Sequence[Customer]], pending: Sequence[Customer]
) -> Sequence[Sequence[Customer]]:
    """The plan must keep every customer, in order, and make progress: outcomes are
    matched to customers by position."""
    flat = [customer for chunk in chunks for customer in chunk]
    if flat != list(pending) or any(not chunk for chunk in chunks):
        raise ValueError("the chunk plan must split the customers in order, none left out")
    return chunks
