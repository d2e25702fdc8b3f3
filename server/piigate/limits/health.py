"""The shared store's health: the gRPC health service `piigate.state`, and what the
metrics read (`piigate_state_ready`, `piigate_state_store_failures_total`, ...).

Every request's outcome updates it at once (a failed call turns it NOT_SERVING, the next
answer SERVING again), and `watch` pings the store while nothing else does, backing off
from 0.25 s to `interval_s` while it is down, so its return shows without a request.

`piigate.state` is reported on its own and is deliberately not part of the overall
service ("" and `piigate.v1.DetokenizationService`): every replica shares the one store,
so taking replicas out of a load balancer for its outage moves no call anywhere better,
and profiles that use no shared control (or fail open) would lose service for nothing.
Each control's configured outcome (`on_store_failure`) is the answer to an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from grpc_health.v1 import health_pb2

from piigate.limits.store import StoreFailure

log = logging.getLogger(__name__)
STATE_SERVICE = "piigate.state"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthSetter(Protocol):
    def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        ...


class Pingable(Protocol):
    async def ping(self, timeout_s: float) -> None: ...


class StateHealth:
    """Whether the store answered its last call, and how often it did not."""

    def __init__(self) -> None:
        self.ready = False  # unknown until the first answer
        self.failures = 0
        self.recoveries = 0
        self.last_error: str | None = None  # a fixed word (timeout, unreachable, ...)
        self._listeners: list[Callable[[bool], None]] = []

    def add_listener(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def succeeded(self) -> None:
        if self.ready:
            return
        self.ready = True
        if self.failures:
            self.recoveries += 1
            log.warning("shared state store answers again")
        self._notify()

    def failed(self, kind: str) -> None:
        self.failures += 1
        self.last_error = kind
        if self.ready:
            log.warning("shared state store failed: %s", kind)
            self.ready = False
            self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            listener(self.ready)

    def report(self) -> dict[str, object]:
        return {"ready": self.ready, "failures": self.failures, "recoveries": self.recoveries,
                "last_error": self.last_error}


async def watch(store: Pingable, state: StateHealth, health: HealthSetter,
                timeout_s: float, interval_s: float = 5.0) -> None:
    """Publish `piigate.state` as it changes, pinging the store, until cancelled."""

    def publish(ready: bool) -> None:
        health.set(STATE_SERVICE, SERVING if ready else NOT_SERVING)  # thread-safe

    state.add_listener(publish)
    publish(state.ready)
    delay = 0.25
    while True:
        try:
            await store.ping(timeout_s)
        except StoreFailure:  # recorded in `state` by the store
            delay = min(delay * 2, interval_s)
        else:
            delay = interval_s
        await asyncio.sleep(delay)
