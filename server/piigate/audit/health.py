"""The chained sink's health: whether it takes events, why not and since when, what the
next repair marker must record, the counters readiness and metrics read, and who to tell.

The bookkeeping only; the sink (`piigate.audit.sink`, rule 4) decides when a failure
starts and when it is over.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from piigate.audit.format import Repair, rfc3339

log = logging.getLogger(__name__)
HealthListener = Callable[[bool], None]


@dataclass(frozen=True, slots=True)
class Recovery:
    """The sink's retry policy: the first retry after `first_delay_s`, then doubling up to
    `max_delay_s` between attempts; each attempt given up after `attempt_timeout_s`."""

    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    attempt_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """A snapshot for readiness and metrics. `failures` counts failed writes, fsyncs and
    cuts; `unrecorded`, events answered AUDIT_UNAVAILABLE because of them; `last_error`
    is an errno name (`ENOSPC`), never a path or data."""

    healthy: bool
    failures: int
    recoveries: int
    unrecorded: int
    last_error: str | None


class TrailHealth:
    """The standing failure (None while healthy), the repair still to record, counters."""

    def __init__(self, clock: Callable[[], float], listener: HealthListener | None) -> None:
        self._clock = clock
        self._listeners = [listener] if listener else []
        self.failure: OSError | None = None  # why writes are refused
        self.pending: Repair | None = None  # what the next repair marker records
        self._failures = self._recoveries = self._unrecorded = 0
        self._last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.failure is None

    def snapshot(self) -> SinkHealth:
        return SinkHealth(self.healthy, self._failures, self._recoveries, self._unrecorded,
                          self._last_error)

    def add_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def torn(self, torn_bytes: int, torn_sha256: str) -> None:
        """A torn final line was cut at open: the next marker records it."""
        self.pending = Repair(torn_bytes=torn_bytes, torn_sha256=torn_sha256)

    def io_error(self, exc: BaseException) -> str:
        """Count one failed system call; its errno name."""
        self._failures += 1
        self._last_error = error_name(exc)
        return self._last_error

    def failed(self, exc: BaseException, reason: str) -> None:
        """A failure that refuses writes; the first one of an outage starts it."""
        if self.failure is not None:
            return
        self.failure = caused(reason, exc)
        outage = Repair(failed_since=rfc3339(self._clock()), error=self._last_error)
        self.pending = outage if self.pending is None else replace(
            self.pending, failed_since=outage.failed_since, error=outage.error)
        log.error("audit trail: %s; audit writes, and so disclosures, are refused", reason)
        self._notify(False)

    def unrecorded_one(self) -> None:
        """One event answered AUDIT_UNAVAILABLE because the trail failed."""
        self._unrecorded += 1
        if self.pending is not None and self.pending.failed_since is not None:
            self.pending = replace(self.pending, unrecorded=self.pending.unrecorded + 1)

    def recovered(self) -> None:
        """The pending repair is on record: the outage, if any, is over."""
        was_failed, self.failure, self.pending = self.failure is not None, None, None
        if was_failed:
            self._recoveries += 1
            log.warning("audit trail: writable again; a repair marker records the outage")
            self._notify(True)

    def _notify(self, healthy: bool) -> None:
        for listener in self._listeners:
            try:
                listener(healthy)
            except Exception:
                log.exception("audit trail: a health listener failed")


def caused(reason: str, exc: BaseException) -> OSError:
    """An OSError saying `reason`, caused by `exc`: what each refused writer raises from."""
    failure = OSError(reason)
    failure.__cause__ = exc
    return failure


def error_name(exc: BaseException) -> str:
    """`ENOSPC` for an OSError with that errno; the exception's type name otherwise."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__
