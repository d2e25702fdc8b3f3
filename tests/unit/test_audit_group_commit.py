"""fsync group commit in the chained audit sink: concurrent writers share fsyncs, and no
write returns before an fsync that began after its line was written has succeeded."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import sys
import threading
from pathlib import Path

import pytest

from piigate.audit.health import Recovery
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.audit.trail import Disk
from piigate.audit.verify import verify_chain
from piigate.errors import AuditUnavailable
from tests.support.audit_events import numbered_event as event

# Only a guard against a hung test (a sink that never runs, or endlessly retries, the fsync
# it should): no assertion depends on it.
HANG_GUARD_S = 30.0


class FsyncRecorder:
    """Stands in for `fsync(2)` (in the worker thread the sink runs it in): records how
    many lines the file held as each fsync began, can hold the first one until released,
    then fsyncs for real, or fails with `error`."""

    def __init__(self, path: Path, hold_first: bool = False,
                 error: OSError | None = None) -> None:
        self.path = path
        self.error = error
        self.started_with: list[int] = []  # lines in the file as each fsync began
        self.completed = 0
        self.running = 0
        self.most_running = 0
        self.first_started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()
        self._lock = threading.Lock()
        self._real = os.fsync

    @property
    def disk(self) -> Disk:
        """The system calls for a sink to use: the real ones, this fsync."""
        return Disk(fsync=self)

    @property
    def calls(self) -> int:
        return len(self.started_with)

    def __call__(self, fd: int) -> None:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            # Read before the real fsync: every line counted here is covered by it.
            self.started_with.append(self.path.read_bytes().count(b"\n"))
        self.first_started.set()
        self.release.wait(HANG_GUARD_S)
        try:
            if self.error is not None:
                raise self.error
            self._real(fd)
        finally:
            with self._lock:
                self.running -= 1
                self.completed += 1


def open_sink(recorder: FsyncRecorder, recovery: Recovery | None = None) -> ChainedJsonLinesSink:
    return ChainedJsonLinesSink.open(recorder.path, fsync=True, disk=recorder.disk,
                                     recovery=recovery)


def line_numbers(path: Path) -> dict[str, int]:
    """request_id -> 1-based line number in the trail."""
    lines = path.read_bytes().splitlines()
    return {json.loads(line)["request_id"]: n for n, line in enumerate(lines, 1)}


async def let_new_tasks_write() -> None:
    """Yield once: tasks created just before run their first step, which writes their
    line synchronously and then waits for durability."""
    await asyncio.sleep(0)


async def test_concurrent_writers_share_fsyncs(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path)
    sink = open_sink(recorder)
    await asyncio.wait_for(asyncio.gather(*(sink.write(event(n)) for n in range(50))), HANG_GUARD_S)
    await sink.close()
    result = verify_chain(path.read_bytes().splitlines())
    assert (result.ok, result.lines, result.last_hash) == (True, 50, sink.last_hash)
    assert 1 <= recorder.calls < 50
    assert recorder.most_running == 1


async def test_a_lone_writer_pays_exactly_one_fsync_per_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path)
    sink = open_sink(recorder)
    await sink.write(event(1))
    assert recorder.started_with == [1]
    await sink.write(event(2))
    await sink.write(event(3))
    assert recorder.started_with == [1, 2, 3]
    await sink.close()  # nothing left to make durable: no extra fsync
    assert recorder.calls == 3


async def test_without_fsync_configured_nothing_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path)
    # stdout's sink has no `Disk`: the recorder stands in for `os.fsync` itself there.
    monkeypatch.setattr(os, "fsync", recorder)
    for sink in (ChainedJsonLinesSink.open(path, fsync=False, disk=recorder.disk),
                 ChainedJsonLinesSink.open(None, fsync=True)):  # stdout: never fsynced
        writes = asyncio.gather(*(sink.write(event(n)) for n in range(5)))
        await asyncio.wait_for(writes, HANG_GUARD_S)
        await sink.close()
    assert recorder.calls == 0
    assert verify_chain(capfdbinary.readouterr().out.splitlines()).lines == 5
    assert not sys.stdout.closed


async def test_no_write_returns_before_an_fsync_begun_after_its_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path, hold_first=True)
    sink = open_sink(recorder)
    fsyncs_done_at_return: dict[str, int] = {}

    async def write(n: int) -> None:
        await sink.write(event(n))
        fsyncs_done_at_return[f"r{n}"] = recorder.completed

    first_wave = [asyncio.create_task(write(n)) for n in range(10)]
    await asyncio.to_thread(recorder.first_started.wait, HANG_GUARD_S)
    # These lines land while the first fsync runs: it began before them, so it must not
    # release them.
    second_wave = [asyncio.create_task(write(n)) for n in range(10, 20)]
    await let_new_tasks_write()
    assert path.read_bytes().count(b"\n") == 20
    assert not any(task.done() for task in first_wave + second_wave)
    recorder.release.set()
    await asyncio.wait_for(asyncio.gather(*first_wave, *second_wave), HANG_GUARD_S)
    await sink.close()

    assert recorder.most_running == 1  # one at a time, so they complete in start order
    assert recorder.started_with == [10, 20]  # one shared fsync per wave
    for request_id, line in line_numbers(path).items():
        done = fsyncs_done_at_return[request_id]
        assert max(recorder.started_with[:done]) >= line, request_id
    assert verify_chain(path.read_bytes().splitlines()).ok


async def test_a_failed_fsync_fails_its_waiters_and_cuts_their_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    caplog.set_level(logging.ERROR, logger="asyncio")
    failure = OSError(errno.EIO, "Input/output error")
    recorder = FsyncRecorder(path, hold_first=True, error=failure)
    # No background retry within the test: only the one last attempt at close.
    sink = open_sink(recorder, Recovery(first_delay_s=HANG_GUARD_S))
    covered = [asyncio.create_task(sink.write(event(n))) for n in range(5)]
    await asyncio.to_thread(recorder.first_started.wait, HANG_GUARD_S)
    uncovered = [asyncio.create_task(sink.write(event(n))) for n in range(5, 10)]
    await let_new_tasks_write()
    assert path.read_bytes().count(b"\n") == 10
    recorder.release.set()

    everyone = asyncio.gather(*covered, *uncovered, return_exceptions=True)
    outcomes = await asyncio.wait_for(everyone, HANG_GUARD_S)
    assert all(isinstance(outcome, AuditUnavailable) for outcome in outcomes)
    assert outcomes[0].__cause__.__cause__ is failure  # type: ignore[union-attr]
    # Every writer was told AUDIT_UNAVAILABLE, so none of their lines may stay: the trail
    # is cut back to the last line an fsync covered (none here).
    assert path.read_bytes() == b""
    with pytest.raises(AuditUnavailable):
        await sink.write(event(10))
    assert path.read_bytes() == b""  # the refused write wrote nothing
    assert recorder.calls == 1  # retries wait for the backoff
    assert (sink.healthy, sink.health().unrecorded) == (False, 11)
    await sink.close()
    assert recorder.calls == 2  # the last attempt at close: its marker is cut back too
    assert path.read_bytes() == b""
    gc.collect()
    assert not [r for r in caplog.records if r.name == "asyncio"]


async def test_a_cancelled_writer_does_not_cancel_the_shared_fsync(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path, hold_first=True)
    sink = open_sink(recorder)
    writers = [asyncio.create_task(sink.write(event(n))) for n in range(3)]
    await asyncio.to_thread(recorder.first_started.wait, HANG_GUARD_S)
    writers[0].cancel()
    await asyncio.wait_for(asyncio.gather(writers[0], return_exceptions=True), HANG_GUARD_S)
    recorder.release.set()
    await asyncio.wait_for(asyncio.gather(*writers[1:]), HANG_GUARD_S)
    assert writers[0].cancelled()
    assert recorder.started_with == [3]
    await sink.write(event(3))  # the sink is still healthy
    await sink.close()
    assert recorder.started_with == [3, 4]


async def test_close_waits_for_the_running_fsync(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    recorder = FsyncRecorder(path, hold_first=True)
    sink = open_sink(recorder)
    writers = [asyncio.create_task(sink.write(event(n))) for n in range(3)]
    await asyncio.to_thread(recorder.first_started.wait, HANG_GUARD_S)
    closing = asyncio.create_task(sink.close())
    for _ in range(10):
        await asyncio.sleep(0)
    assert not closing.done()
    with pytest.raises(AuditUnavailable):  # closing: no new lines
        await sink.write(event(3))
    recorder.release.set()
    # The waiting writers still succeed.
    await asyncio.wait_for(asyncio.gather(*writers, closing), HANG_GUARD_S)
    assert (recorder.completed, recorder.started_with) == (1, [3])
    assert verify_chain(path.read_bytes().splitlines()).lines == 3
    # The lock is released: another sink can open the trail and chain on.
    reopened = ChainedJsonLinesSink.open(path, fsync=False)
    assert reopened.last_hash == sink.last_hash
    await reopened.close()
