"""The chained sink on a failing disk: a failed write leaves no partial line behind (now or
at shutdown), and the sink recovers by itself, with bounded, backed-off attempts, once the
disk takes lines again; its health and counters say so meanwhile.

The disk is a real file in tmp_path written through real system calls, failed on demand by
the `Disk` the sink is given (ENOSPC as a filling disk gives it: part of a write lands,
then the rest is refused). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from piigate.audit.format import REPAIR_EVENT
from piigate.audit.health import Recovery
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.audit.trail import Disk
from piigate.audit.verify import verify_chain
from piigate.errors import AuditUnavailable
from tests.support.audit_events import numbered_event as event

HANG_GUARD_S = 10.0  # only a hung test reaches it
NO_RETRY = Recovery(first_delay_s=3600.0)  # no background attempt within a test
FAST = Recovery(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=1.0)


class FaultyDisk:
    """Real system calls until told to fail. While `full`, a write lands half its bytes
    and the call after it fails with ENOSPC; `fsync_error` and `truncate_error` fail those
    calls; `fsync_gate`, when set, holds each fsync until it is opened."""

    def __init__(self) -> None:
        self.full = False
        self.fsync_error: OSError | None = None
        self.truncate_error: OSError | None = None
        self.fsync_gate: threading.Event | None = None
        self.writes = self.fsyncs = self.truncates = 0
        self._refuse_next = False

    @property
    def disk(self) -> Disk:
        return Disk(write=self.write, fsync=self.fsync, truncate=self.truncate)

    def write(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if self.full and self._refuse_next:
            self._refuse_next = False
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.full:
            self._refuse_next = True
            return os.write(fd, data[: max(1, len(data) // 2)])
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        if self.fsync_gate is not None:
            self.fsync_gate.wait(HANG_GUARD_S)
        if self.fsync_error is not None:
            raise self.fsync_error
        os.fsync(fd)

    def truncate(self, fd: int, length: int) -> None:
        self.truncates += 1
        if self.truncate_error is not None:
            raise self.truncate_error
        os.ftruncate(fd, length)


def records(path: Path) -> list[dict[str, object]]:
    """The trail's lines as objects; every line must be whole JSON."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "a partial line was left behind"
    return [json.loads(line) for line in data.splitlines()]


def request_ids(path: Path) -> list[object]:
    return [r.get("request_id", r["event"]) for r in records(path)]


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll until `condition()` holds; fail after HANG_GUARD_S."""
    for _ in range(int(HANG_GUARD_S / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


# --- a: no partial line, now or at shutdown -------------------------------------------
@pytest.mark.parametrize("fsync", [False, True])
async def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync, disk=faulty.disk, recovery=NO_RETRY)
    await sink.write(event(1))
    await sink.write(event(2))
    head = sink.last_hash
    faulty.full = True
    with pytest.raises(AuditUnavailable) as failed:
        await sink.write(event(3))
    assert isinstance(failed.value.__cause__, OSError)
    assert failed.value.__cause__.errno == errno.ENOSPC
    assert faulty.truncates == 1  # cut back at once, not at some later write
    assert request_ids(path) == ["r1", "r2"]
    assert sink.last_hash == head  # the chain head stays at the last whole line
    with pytest.raises(AuditUnavailable):  # refused while the failure stands: nothing tried
        await sink.write(event(4))
    assert request_ids(path) == ["r1", "r2"]
    await sink.close()  # the disk is still full: the last attempt fails too
    assert request_ids(path) == ["r1", "r2"]
    assert verify_chain(path.read_bytes().splitlines()).ok


async def test_shutdown_after_a_failed_write_adds_no_line_for_it(tmp_path: Path) -> None:
    """The old sink flushed the buffered rest of a failed line at close, once the disk had
    room: the trail then showed `allowed` for a call answered AUDIT_UNAVAILABLE."""
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=False, disk=faulty.disk, recovery=NO_RETRY)
    await sink.write(event(1))
    faulty.full = True
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))
    faulty.full = False  # room again, just before shutdown
    await sink.close()
    lines = records(path)
    assert [r.get("request_id") for r in lines] == ["r1", None]
    assert not any(r.get("outcome") == "allowed" and r.get("request_id") == "r2" for r in lines)
    marker = lines[-1]  # the outage, recorded by the last attempt at close
    assert (marker["event"], marker["error"], marker["unrecorded"]) == (REPAIR_EVENT, "ENOSPC", 1)
    assert verify_chain(path.read_bytes().splitlines()).ok


async def test_a_cut_that_fails_is_made_before_anything_else_is_written(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=False, disk=faulty.disk, recovery=FAST)
    await sink.write(event(1))
    faulty.full = True
    faulty.truncate_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))
    assert not path.read_bytes().endswith(b"\n")  # the partial line is still there...
    faulty.full = False
    await asyncio.sleep(0.1)  # ...and no attempt writes after it while the cut is owed
    assert not sink.healthy
    assert not path.read_bytes().endswith(b"\n")
    faulty.truncate_error = None
    await eventually(lambda: sink.healthy)
    await sink.write(event(3))
    await sink.close()
    assert request_ids(path) == ["r1", REPAIR_EVENT, "r3"]
    assert verify_chain(path.read_bytes().splitlines()).ok


# --- b: recovery without a restart ------------------------------------------------------
async def test_the_sink_recovers_by_itself_when_the_disk_does(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    changes: list[bool] = []
    sink = ChainedJsonLinesSink.open(path, fsync=True, disk=faulty.disk, recovery=FAST,
                                     on_health_change=changes.append, clock=lambda: 1e9)
    await sink.write(event(1))
    faulty.full = True
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))
    assert (sink.healthy, changes) == (False, [False])
    for n in range(3, 6):
        with pytest.raises(AuditUnavailable):
            await sink.write(event(n))
    await asyncio.sleep(0.1)  # attempts fail meanwhile, the disk being full
    assert not sink.healthy
    faulty.full = False
    await eventually(lambda: sink.healthy)
    assert changes == [False, True]
    await sink.write(event(6))
    await sink.close()

    assert request_ids(path) == ["r1", REPAIR_EVENT, "r6"]
    marker = records(path)[1]
    assert marker == {"event": REPAIR_EVENT, "time": "2001-09-09T01:46:40.000+00:00",
                      "failed_since": "2001-09-09T01:46:40.000+00:00", "error": "ENOSPC",
                      "unrecorded": 4, "prev": marker["prev"]}
    result = verify_chain(path.read_bytes().splitlines())
    assert result.ok
    assert [(n, r.unrecorded) for n, r in result.repairs] == [(2, 4)]
    health = sink.health()
    assert (health.healthy, health.recoveries, health.unrecorded) == (True, 1, 4)
    assert health.failures >= 2  # the write, then at least one failed attempt
    assert health.last_error == "ENOSPC"


async def test_attempts_back_off_and_each_is_bounded_in_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    policy = Recovery(first_delay_s=0.01, max_delay_s=0.04, attempt_timeout_s=0.05)
    sink = ChainedJsonLinesSink.open(path, fsync=True, disk=faulty.disk, recovery=policy)
    await sink.write(event(1))
    faulty.fsync_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))
    assert request_ids(path) == ["r1"]  # the line the failed fsync covered is cut
    # Now every fsync hangs: each attempt gives up after its timeout, none piles up.
    faulty.fsync_error = None
    faulty.fsync_gate = threading.Event()
    fsyncs, failures = faulty.fsyncs, sink.health().failures
    await eventually(lambda: faulty.fsyncs > fsyncs)  # the first attempt's fsync hangs
    await eventually(lambda: sink.health().failures >= failures + 3)  # 3 attempts timed out
    assert not sink.healthy
    assert sink.health().last_error == "TimeoutError"
    assert faulty.fsyncs == fsyncs + 1  # the one hung fsync, joined, never a second
    faulty.fsync_gate.set()
    await eventually(lambda: sink.healthy)
    await sink.close()
    assert request_ids(path) == ["r1", REPAIR_EVENT]


async def test_writes_while_the_marker_awaits_its_fsync_are_taken(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=True, disk=faulty.disk, recovery=FAST)
    faulty.full = True
    with pytest.raises(AuditUnavailable):
        await sink.write(event(1))
    faulty.fsync_gate = threading.Event()
    faulty.full = False
    await eventually(lambda: REPAIR_EVENT.encode() in path.read_bytes())
    writer = asyncio.create_task(sink.write(event(2)))  # queued behind the marker's fsync
    await asyncio.sleep(0.05)
    assert not writer.done()
    assert not sink.healthy  # healthy only once the marker is on disk
    faulty.fsync_gate.set()
    await asyncio.wait_for(writer, HANG_GUARD_S)
    await eventually(lambda: sink.healthy)
    await sink.close()
    assert request_ids(path) == [REPAIR_EVENT, "r2"]


async def test_no_recovery_task_outlives_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=False, disk=faulty.disk, recovery=FAST)
    faulty.full = True
    with pytest.raises(AuditUnavailable):
        await sink.write(event(1))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(sink.close(), HANG_GUARD_S)
    await sink.close()  # again: a no-op
    others = asyncio.all_tasks() - {asyncio.current_task()}
    assert not [t for t in others if "_recover" in repr(t.get_coro())]
    writes = faulty.writes
    await asyncio.sleep(0.1)
    assert faulty.writes == writes
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))


async def test_a_failing_health_listener_does_not_break_the_sink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(healthy: bool) -> None:
        raise RuntimeError("listener bug")

    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=False, disk=faulty.disk, recovery=FAST,
                                     on_health_change=broken)
    faulty.full = True
    with pytest.raises(AuditUnavailable):
        await sink.write(event(1))
    faulty.full = False
    await eventually(lambda: sink.healthy)
    await sink.write(event(2))
    await sink.close()
    assert "a health listener failed" in caplog.text
    assert request_ids(path) == [REPAIR_EVENT, "r2"]
