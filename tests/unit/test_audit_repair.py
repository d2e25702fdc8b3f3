"""A torn final line at start-up (a crash mid-write, or a restart while the disk was full):
cut, recorded in a chained repair marker that `piigate audit verify` reports, and told to
the operator in the log; never chained over silently, never a refusal to start."""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import json
import logging
from pathlib import Path

import pytest

from piigate.audit.format import REPAIR_EVENT, Repair
from piigate.audit.health import Recovery
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.audit.trail import AuditChainError, last_hash_of
from piigate.audit.verify import verify_chain
from piigate.cli import audit as audit_cli
from piigate.errors import AuditUnavailable
from tests.support.audit_events import numbered_event as event
from tests.unit.test_audit_recovery import FAST, FaultyDisk, eventually, records

TORN = b'{"caller":"fhir-app","event":"disclosure","fields":[{"discl'


async def write_events(path: Path, numbers: range) -> None:
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    for n in numbers:
        await sink.write(event(n))
    await sink.close()


def tear(path: Path, torn: bytes = TORN) -> None:
    with path.open("ab") as f:
        f.write(torn)


@pytest.mark.parametrize("fsync", [False, True])
async def test_a_torn_final_line_is_cut_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fsync: bool
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 3))
    whole = path.read_bytes()
    tear(path)
    caplog.set_level(logging.WARNING)
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=fsync, disk=faulty.disk, clock=lambda: 1e9)
    digest = hashlib.sha256(TORN).hexdigest()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{len(TORN)} bytes, sha256 {digest}" in m for m in warnings)
    assert not any(TORN.decode() in r.getMessage() for r in caplog.records)  # never its content
    assert (sink.healthy, faulty.fsyncs) == (True, int(fsync))  # the marker is durable at once
    await sink.write(event(3))
    await sink.close()

    data = path.read_bytes()
    assert data.startswith(whole)
    lines = records(path)  # whole lines only: the torn bytes are gone
    assert len(lines) == 4
    assert lines[2] == {"event": REPAIR_EVENT, "time": "2001-09-09T01:46:40.000+00:00",
                        "torn_bytes": len(TORN), "torn_sha256": digest,
                        "prev": hashlib.sha256(whole.splitlines()[-1]).hexdigest()}
    assert lines[3]["request_id"] == "r3"
    result = verify_chain(data.splitlines())
    assert (result.ok, result.lines) == (True, 4)
    assert result.repairs == ((3, Repair(torn_bytes=len(TORN), torn_sha256=digest)),)


def test_the_cli_reports_the_repair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    asyncio.run(write_events(path, range(1, 3)))
    tear(path)
    asyncio.run(write_events(path, range(3, 4)))
    args = argparse.Namespace(audit_command="verify", file=path, expect_last=None)
    assert audit_cli.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ok: 4 events, last hash ")
    assert out[1] == (f"repaired at line 3: a torn final line ({len(TORN)} bytes, sha256 "
                      f"{hashlib.sha256(TORN).hexdigest()}) was cut at start-up")


async def test_a_torn_only_line_starts_the_chain_with_the_marker(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    tear(path, b'{"caller":"fh')
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    await sink.write(event(1))
    await sink.close()
    lines = records(path)
    assert [r["event"] for r in lines] == [REPAIR_EVENT, "disclosure"]
    assert lines[0]["prev"] == "0" * 64
    assert verify_chain(path.read_bytes().splitlines()).ok


async def test_a_restart_while_the_disk_is_full_starts_unhealthy_then_heals(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 3))
    tear(path)
    faulty = FaultyDisk()
    faulty.full = True
    changes: list[bool] = []
    sink = ChainedJsonLinesSink.open(path, fsync=True, disk=faulty.disk, recovery=FAST,
                                     on_health_change=changes.append)
    assert not sink.healthy  # started, not refused: the marker waits for room
    assert [r["request_id"] for r in records(path)] == ["r1", "r2"]  # torn bytes cut
    with pytest.raises(AuditUnavailable):
        await sink.write(event(3))
    faulty.full = False
    await eventually(lambda: sink.healthy)
    assert changes == [False, True]
    await sink.write(event(4))
    await sink.close()
    lines = records(path)
    assert [r.get("request_id", r["event"]) for r in lines] == ["r1", "r2", REPAIR_EVENT, "r4"]
    marker = lines[2]
    assert (marker["torn_bytes"], marker["error"], marker["unrecorded"]) == (len(TORN),
                                                                            "ENOSPC", 1)
    result = verify_chain(path.read_bytes().splitlines())
    assert result.ok
    assert "was cut at start-up; writes failed (ENOSPC)" in result.repairs[0][1].describe()


async def test_a_partial_line_left_by_a_failing_disk_is_repaired_at_the_next_start(
    tmp_path: Path,
) -> None:
    """The whole story on one file: a write fails half-way and the cut fails too (the disk
    is failing), the gateway stops, and the next start repairs what was left."""
    path = tmp_path / "audit.jsonl"
    faulty = FaultyDisk()
    sink = ChainedJsonLinesSink.open(path, fsync=False, disk=faulty.disk,
                                     recovery=Recovery(first_delay_s=3600.0))
    await sink.write(event(1))
    faulty.full = True
    faulty.truncate_error = OSError(errno.EIO, "Input/output error")
    with pytest.raises(AuditUnavailable):
        await sink.write(event(2))
    await sink.close()
    assert not path.read_bytes().endswith(b"\n")  # what a crash would have left, too
    with pytest.raises(AuditChainError, match="torn"):
        last_hash_of(path)  # reading only repairs nothing

    sink = ChainedJsonLinesSink.open(path, fsync=False)
    assert sink.healthy
    await sink.write(event(3))
    await sink.close()
    lines = records(path)
    assert [r.get("request_id", r["event"]) for r in lines] == ["r1", REPAIR_EVENT, "r3"]
    assert not any(r.get("request_id") == "r2" for r in lines)
    assert verify_chain(path.read_bytes().splitlines()).ok


@pytest.mark.parametrize(
    "damage",
    [
        b'{"event":"disclosure"}\n' + TORN,  # a foreign line before the torn one
        b"\n" + TORN,  # an empty line before it
        b"[" * 1000 + b"\n",  # hostile and whole: refused, not a RecursionError
        b"x" * (70 * 1024),  # longer than any line of ours
    ],
)
async def test_damage_that_is_not_a_torn_write_still_refuses_the_open(
    tmp_path: Path, damage: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 3))
    tear(path, damage)
    before = path.read_bytes()
    with pytest.raises(AuditChainError):
        ChainedJsonLinesSink.open(path, fsync=False)
    assert path.read_bytes() == before  # nothing cut


async def test_a_hostile_torn_line_is_cut_like_any_other(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 2))
    tear(path, b"[" * 1000)
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    await sink.close()
    assert json.loads(path.read_bytes().splitlines()[-1])["torn_bytes"] == 1000
