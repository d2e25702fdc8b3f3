"""The chained JSON Lines sink: writes each event as a chained line, and heals the trail.

Rules (the format's own are in `piigate.audit.format`, the file's in `piigate.audit.trail`):

1. A write serialises its event once (`AuditEvent.to_dict` plus `prev`, in the canonical
   form), hashes those bytes and appends the line in one go; the chain advances only once
   the whole line is in the file. Writing is synchronous, so concurrent writers still form
   one chain, in the order they wrote.
2. With fsync, a write returns only after an fsync that *began after its line was written*
   has succeeded (PII is returned only after that). Concurrent writers share those fsyncs
   (group commit): one runs at a time and covers every line written before it began; a
   writer whose line came later waits for it and then starts (or joins) the next.
3. A line whose writer was told AUDIT_UNAVAILABLE never stays in the file: a failed write
   is cut back to the end of the last complete line, a failed fsync back to the end of the
   last line an fsync covered (the lines after it are in doubt, and their writers all fail).
   The chain head moves back with the cut.
4. While a failure stands, every write is refused (AuditUnavailable, counted as
   unrecorded) and `healthy` is False. One recovery task retries with capped exponential
   backoff (`Recovery`), each attempt bounded in time: make any cut still owed, append a
   repair marker recording the outage, and (with fsync) make it durable. Its success is the
   recovery: the disk took a real line again. The task ends on recovery or at close.
5. A stream (stdout) cannot be cut back: after one failure its sink refuses every later
   write, as the tail is then unknown.

Timed (`time_with`): each `write` until it returns or raises (fsync wait included), and
each fsync on its own, with whether it succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from piigate.audit.event import AuditEvent
from piigate.audit.format import GENESIS_HASH, MAX_LINE_BYTES, chain
from piigate.audit.health import HealthListener, Recovery, SinkHealth, TrailHealth, caused
from piigate.audit.trail import Disk, Tail, TrailFile, TrailStream
from piigate.errors import AuditUnavailable

log = logging.getLogger(__name__)
#: `(succeeded, seconds)` of one write or one fsync.
Timing = Callable[[bool, float], None]


def _untimed(_ok: bool, _seconds: float) -> None:
    return None


class ChainedJsonLinesSink:
    """An `AuditSink` writing chained JSON lines to a trail file or a stream (see rules)."""

    def __init__(
        self,
        target: BinaryIO | TrailFile,
        *,
        fsync: bool = False,
        tail: Tail | None = None,
        recovery: Recovery | None = None,
        clock: Callable[[], float] = time.time,
        on_health_change: HealthListener | None = None,
    ) -> None:
        self._trail = target if isinstance(target, TrailFile) else TrailStream(target)
        tail = tail or Tail(GENESIS_HASH, 0, True)
        self._fsync = fsync
        self._recovery = recovery or Recovery()
        self._clock = clock
        self._health = TrailHealth(clock, on_health_change)
        self._closed = False  # no new writes
        self._finished = False  # the file is closed
        self._last_hash = tail.last_hash
        self._end = tail.end  # bytes of whole lines in the file
        # The file's last line is whole but lacks its newline (a write cut just before
        # it): end that line before appending at this offset, or the next would be glued on.
        self._unterminated_at = None if tail.terminated else tail.end
        self._written = 0  # lines appended by this sink (cut lines taken back off)
        self._durable = 0  # of those, how many an fsync has covered
        self._durable_end, self._durable_hash = tail.end, tail.last_hash
        self._generation = 0  # bumped by each cut of lines that had waiters (rule 3)
        self._cut_cause: OSError | None = None  # what the last such cut answers its waiters
        self._syncing: asyncio.Task[None] | None = None  # the fsync under way, if any
        self._cut_to: int | None = None  # a cut owed to the file
        self._marker: tuple[int, int] | None = None  # (generation, mark) of one written
        self._recovering: asyncio.Task[None] | None = None
        self._write_timing: Timing = _untimed
        self._fsync_timing: Timing = _untimed
        if tail.torn_sha256 is not None:
            self._health.torn(tail.torn_bytes, tail.torn_sha256)

    @classmethod
    def open(
        cls,
        path: Path | None,
        fsync: bool,
        *,
        disk: Disk | None = None,
        recovery: Recovery | None = None,
        clock: Callable[[], float] = time.time,
        on_health_change: HealthListener | None = None,
    ) -> ChainedJsonLinesSink:
        """Append to `path`, chaining on from its last line; stdout if None.

        A torn final line is cut and a repair marker written at once; if the disk refuses
        the marker, the sink starts unhealthy and writes it on recovery. On stdout each
        process starts a new chain at the genesis hash (stdout cannot be read back);
        verification reports such a restart as kind "restarted".
        """
        if path is None:
            return cls(sys.stdout.buffer, fsync=False, clock=clock,
                       on_health_change=on_health_change)
        trail, tail = TrailFile.open(path, disk or Disk())
        sink = cls(trail, fsync=fsync, tail=tail, recovery=recovery, clock=clock,
                   on_health_change=on_health_change)
        if sink._health.pending is not None:
            sink._mark_repair_now()
        return sink

    @property
    def last_hash(self) -> str:
        """The hash of the last line written (or found at open): the value to keep
        elsewhere and later check the trail against (`--expect-last`)."""
        return self._last_hash

    @property
    def healthy(self) -> bool:
        """False while a failure stands and writes are refused (rule 4)."""
        return self._health.healthy

    def health(self) -> SinkHealth:
        """Health and failure counts, for readiness and metrics."""
        return self._health.snapshot()

    def add_health_listener(self, listener: HealthListener) -> None:
        """Call `listener(healthy)` on the event loop at each change of `healthy`."""
        self._health.add_listener(listener)

    def time_with(self, write: Timing, fsync: Timing) -> None:
        """Report each write's and each fsync's outcome and duration (metrics)."""
        self._write_timing, self._fsync_timing = write, fsync

    async def write(self, event: AuditEvent) -> None:
        """Append `event`'s chained line; with fsync, return once it is on disk. Raises
        AuditUnavailable when the line cannot be written or made durable."""
        started = time.perf_counter()
        try:
            await self._write(event)
        except BaseException:
            self._write_timing(False, time.perf_counter() - started)
            raise
        self._write_timing(True, time.perf_counter() - started)

    async def _write(self, event: AuditEvent) -> None:
        if self._closed:
            raise AuditUnavailable() from ValueError("write to a closed audit sink")
        if self._health.failure is not None and self._marker is None:
            self._health.unrecorded_one()
            self._start_recovery()
            raise AuditUnavailable() from self._health.failure
        try:
            line, new_hash = chain(event.to_dict(), self._last_hash)
            if len(line) > MAX_LINE_BYTES:
                raise ValueError(f"an audit line longer than {MAX_LINE_BYTES} bytes")
        except (OSError, ValueError) as exc:  # nothing written: the chain is intact
            raise AuditUnavailable() from exc
        try:
            mark = self._append(line, new_hash)
        except (OSError, ValueError) as exc:
            self._health.unrecorded_one()
            raise AuditUnavailable() from exc
        if self._fsync:
            await self._wait_durable(mark, counted=True)

    async def close(self) -> None:
        """Refuse new writes, let the lines already written become durable (their writers
        may be waiting for that), record a standing outage if the disk takes it now, make
        any cut still owed, then close the file, which releases its lock. Safe to call
        again, also after a failure."""
        if self._finished:
            return
        self._closed = True
        if self._recovering is not None:
            self._recovering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovering
        if self._health.failure is not None and self._trail.can_cut:
            with contextlib.suppress(Exception):  # the last of rule 4's attempts
                await asyncio.wait_for(self._attempt_repair(), self._recovery.attempt_timeout_s)
        if self._fsync:
            with contextlib.suppress(AuditUnavailable):  # the writers got it already
                await self._wait_durable((self._generation, self._written), counted=False)
        while self._syncing is not None:  # a failed sink's last fsync: never close under it
            await asyncio.shield(self._syncing)
        if not self._make_owed_cut():
            log.error("audit trail: a partial line could not be cut off; it is cut, and "
                      "recorded, at the next start")
        self._finished = True
        self._trail.close()

    def _append(self, line: bytes, new_hash: str) -> tuple[int, int]:
        """Append one chained line (rule 1), or fail and cut it back (rule 3). The mark
        this line's durability is measured against."""
        data = (b"\n" if self._end == self._unterminated_at else b"") + line + b"\n"
        try:
            self._trail.append(data)
        except BaseException as exc:
            self._fail(exc, "an audit write failed", cut_to=self._end)
            raise
        self._end += len(data)
        self._last_hash = new_hash
        self._written += 1
        return self._generation, self._written

    async def _wait_durable(self, mark: tuple[int, int], counted: bool) -> None:
        """Return once line `mark` is covered by a successful fsync (rule 2).

        The running fsync covers this line only if it began after the line was written;
        if not, once it ends, the first waiter left uncovered starts the next one and the
        others join it. The fsync is shielded: a cancelled writer must not cancel the
        fsync other writers are waiting on. A cut of the line (rule 3) fails the wait.
        """
        generation, number = mark
        while True:
            if generation != self._generation:
                if counted:
                    self._health.unrecorded_one()
                raise AuditUnavailable() from self._cut_cause
            if self._durable >= number:
                return
            if self._syncing is None:
                self._syncing = asyncio.create_task(self._fsync_written())
            await asyncio.shield(self._syncing)

    async def _fsync_written(self) -> None:
        """One fsync, covering every line written before it began.

        It never raises, so no failure goes unretrieved when its waiters are gone. Any
        failure counts, not only OSError: what reached the disk is then unknown.
        """
        covers = (self._generation, self._written, self._end, self._last_hash)
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._trail.sync)
        except Exception as exc:
            self._fsync_timing(False, time.perf_counter() - started)
            self._sync_failed(exc)
        else:
            self._fsync_timing(True, time.perf_counter() - started)
            self._synced(*covers)
        finally:
            self._syncing = None  # before the waiters wake: they may start the next one

    def _synced(self, generation: int, written: int, end: int, last_hash: str) -> None:
        if generation == self._generation:
            self._durable, self._durable_end, self._durable_hash = written, end, last_hash

    def _sync_failed(self, exc: BaseException) -> None:
        """Rule 3 for a failed fsync: every line after the last durable one is in doubt."""
        self._generation += 1
        self._written, self._end, self._last_hash = (
            self._durable, self._durable_end, self._durable_hash)
        self._cut_cause = caused("an audit fsync failed; lines not yet on disk are cut off", exc)
        self._fail(exc, "an audit fsync failed", cut_to=self._durable_end)

    def _fail(self, exc: BaseException, what: str, cut_to: int) -> None:
        """Refuse writes until a recovery (the first reason stays), and cut at once."""
        name = self._health.io_error(exc)
        self._marker = None  # a marker already written no longer ends the outage
        if not self._trail.can_cut:
            self._health.failed(exc, "an earlier audit write failed; the chain's tail is uncertain")
            return
        self._cut_to = cut_to if self._cut_to is None else min(self._cut_to, cut_to)
        self._health.failed(exc, f"{what} ({name}); retrying until the disk takes lines again")
        self._make_owed_cut()
        self._start_recovery()

    def _make_owed_cut(self) -> bool:
        """Truncate the file back to the end of its last whole line, if owed."""
        if self._cut_to is None:
            return True
        try:
            self._trail.cut(self._cut_to)
        except (OSError, ValueError) as exc:  # ValueError: the file is closed
            self._health.io_error(exc)
            return False
        self._cut_to = None
        return True

    def _start_recovery(self) -> None:
        if self._recovering is not None or self._closed or not self._trail.can_cut:
            return
        with contextlib.suppress(RuntimeError):  # no loop yet (at open): on the first write
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Rule 4: attempts with capped backoff until one succeeds or the sink closes."""
        delay = self._recovery.first_delay_s
        try:
            while self._health.failure is not None and not self._closed:
                await asyncio.sleep(delay)
                try:
                    await asyncio.wait_for(self._attempt_repair(),
                                           self._recovery.attempt_timeout_s)
                except TimeoutError as exc:  # a hung fsync: it goes on, and is joined next
                    self._health.io_error(exc)
                    delay = min(delay * 2, self._recovery.max_delay_s)
                except Exception:  # counted where it failed; try again later
                    delay = min(delay * 2, self._recovery.max_delay_s)
        finally:
            self._recovering = None

    async def _attempt_repair(self) -> None:
        """Make the owed cut, write the repair marker (once per try of the disk) and, with
        fsync, make it durable: then the outage is over."""
        if not self._make_owed_cut():
            raise OSError(errno.EIO, "the cut is still owed")
        if self._marker is None or self._marker[0] != self._generation:
            self._marker = self._write_marker()
        marker = self._marker
        if self._fsync:
            await self._wait_durable(marker, counted=False)
        if self._marker == marker:  # no new failure meanwhile
            self._health.recovered()
            self._marker = None

    def _mark_repair_now(self) -> None:
        """At open, with no loop needed: record the cut torn line at once, or start
        unhealthy (the marker follows on recovery)."""
        with contextlib.suppress(OSError, ValueError):  # `_fail` has taken note
            self._marker = self._write_marker()
            if self._fsync:
                covers = (self._generation, self._written, self._end, self._last_hash)
                try:
                    self._trail.sync()
                except OSError as exc:
                    self._sync_failed(exc)
                    return
                self._synced(*covers)
            self._health.recovered()
            self._marker = None

    def _write_marker(self) -> tuple[int, int]:
        pending = self._health.pending
        assert pending is not None  # set with every failure, and for a torn line
        line, new_hash = chain(pending.to_dict(self._clock()), self._last_hash)
        return self._append(line, new_hash)
