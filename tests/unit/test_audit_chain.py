"""The tamper-evident audit trail: chaining, verification, the chained sink and its CLI."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from piigate.audit.event import AuditEvent, FieldDisclosure
from piigate.audit.format import GENESIS_HASH, MAX_LINE_BYTES, chain_line
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.audit.trail import AuditChainError, last_hash_of
from piigate.audit.verify import verify_chain
from piigate.cli import audit as audit_cli
from piigate.errors import AuditUnavailable
from tests.support.audit_events import numbered_event as event

REPO = Path(__file__).resolve().parents[2]


def chained(count: int) -> list[bytes]:
    """`count` chained lines as a file holds them, newline included."""
    lines, prev = [], GENESIS_HASH
    for n in range(1, count + 1):
        line, prev = chain_line(event(n).to_json(), prev)
        lines.append(line.encode() + b"\n")
    return lines


def sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


# --- chain_line ---------------------------------------------------------------------------
def test_chain_line_adds_prev_and_keeps_the_event_canonical() -> None:
    line, digest = chain_line(event(1).to_json(), GENESIS_HASH)
    data = json.loads(line)
    assert data["prev"] == "0" * 64
    assert data["request_id"] == "r1"
    assert line == json.dumps(data, separators=(",", ":"), sort_keys=True)
    assert {k: v for k, v in data.items() if k != "prev"} == json.loads(event(1).to_json())
    assert digest == hashlib.sha256(line.encode()).hexdigest()  # prev is in the hashed bytes
    assert "\n" not in line


def test_each_hash_depends_on_the_previous_one() -> None:
    first, h1 = chain_line(event(1).to_json(), GENESIS_HASH)
    second, h2 = chain_line(event(2).to_json(), h1)
    _, h2_other = chain_line(event(2).to_json(), "f" * 64)
    assert json.loads(second)["prev"] == h1 == sha(first.encode())
    assert h2 != h2_other


@pytest.mark.parametrize(
    ("event_json", "prev"),
    [
        ('{"a":1}', "0" * 63),
        ('{"a":1}', "G" * 64),
        ('{"a":1}', "A" * 64),  # lowercase only: one spelling, one hash
        ("[1]", GENESIS_HASH),
        ('"text"', GENESIS_HASH),
        ('{"prev":"x"}', GENESIS_HASH),
        ("not json", GENESIS_HASH),
    ],
)
def test_chain_line_refuses_bad_input(event_json: str, prev: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        chain_line(event_json, prev)


# --- verify_chain -------------------------------------------------------------------------
def test_an_intact_chain_verifies_with_its_last_hash() -> None:
    lines = chained(5)
    result = verify_chain(lines)
    assert result.ok
    assert (result.lines, result.last_hash) == (5, sha(lines[-1]))
    assert verify_chain(line.rstrip(b"\n") for line in lines).ok  # newlines optional


def test_an_empty_trail_is_ok_and_ends_at_genesis() -> None:
    result = verify_chain([])
    assert result.ok
    assert (result.lines, result.last_hash) == (0, GENESIS_HASH)


def test_an_edited_value_breaks_the_next_link() -> None:
    lines = chained(5)
    lines[2] = lines[2].replace(b"user-3", b"user-9")  # still canonical JSON
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (4, "edited_or_deleted")
    assert "line 3 was edited" in result.detail
    assert result.lines == 5


def test_an_edit_that_is_not_canonical_is_pinned_to_its_own_line() -> None:
    lines = chained(5)
    lines[1] = lines[1].replace(b'"outcome":', b'"outcome": ')
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (2, "edited")


@pytest.mark.parametrize(
    "damage",
    [b"", b"\n", b"garbage\n", b"[]\n", b'{"a":1}\n', b'{"prev":"00"}\n', b"\xff\xfe\n"],
)
def test_a_line_that_is_not_a_chained_line_is_reported_as_edited(damage: bytes) -> None:
    lines = chained(3)
    lines[1] = damage
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (2, "edited")


def test_an_edited_prev_breaks_that_line() -> None:
    lines = chained(4)
    data = json.loads(lines[2])
    data["prev"] = "1" * 64
    lines[2] = json.dumps(data, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (3, "edited_or_deleted")


def test_a_deleted_line_is_found_where_it_is_missing() -> None:
    lines = chained(5)
    del lines[2]
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (3, "edited_or_deleted")
    assert "deleted" in result.detail
    assert result.lines == 4


def test_a_deleted_range_in_the_middle_is_found() -> None:
    lines = chained(8)
    del lines[2:6]
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (3, "edited_or_deleted")


def test_a_deleted_first_line_is_found() -> None:
    lines = chained(3)[1:]
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (1, "edited_or_deleted")
    assert "genesis" in result.detail


def test_two_swapped_lines_are_reported_as_reordered() -> None:
    lines = chained(5)
    lines[1], lines[2] = lines[2], lines[1]
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (2, "reordered")
    assert "line 3" in result.detail


def test_a_line_moved_later_is_reported_as_reordered() -> None:
    lines = chained(6)
    lines.insert(4, lines.pop(1))  # line 2 now sits at line 5
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (2, "reordered")


def test_a_forged_line_with_a_correct_prev_is_found_as_inserted() -> None:
    lines = chained(4)
    forged, _ = chain_line(AuditEvent(time=1.0, request_id="x", outcome="allowed").to_json(),
                           sha(lines[1]))
    lines.insert(2, forged.encode() + b"\n")  # between lines 2 and 3: it becomes line 3
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (3, "inserted")
    assert result.detail == "line 3 is not part of the chain (inserted): line 4 links to line 2"


def test_a_forged_line_with_a_wrong_prev_is_found_as_inserted() -> None:
    lines = chained(4)
    forged, _ = chain_line(AuditEvent(time=1.0, request_id="x", outcome="allowed").to_json(),
                           "a" * 64)
    lines.insert(2, forged.encode() + b"\n")
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (3, "inserted")


def test_several_forged_lines_are_found_as_one_inserted_range() -> None:
    lines = chained(4)
    prev = sha(lines[0])
    forged = []
    for n in range(3):
        line, prev = chain_line(AuditEvent(time=n, request_id=f"x{n}", outcome="allowed")
                                .to_json(), prev)
        forged.append(line.encode() + b"\n")
    lines[1:1] = forged
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (2, "inserted")
    assert result.detail.startswith("lines 2-4 are not part of the chain")


def test_a_second_chain_appended_is_reported_as_restarted() -> None:
    lines = chained(3) + chained(2)
    result = verify_chain(lines)
    assert (result.broken_at, result.kind) == (4, "restarted")


def test_a_truncated_tail_is_invisible_without_expect_last() -> None:
    lines = chained(5)
    expected_last = sha(lines[-1])
    assert verify_chain(lines[:3]).ok  # the limit of chaining alone
    result = verify_chain(lines[:3], expect_last=expected_last)
    assert (result.broken_at, result.kind) == (4, "tail_mismatch")
    assert "cut off" in result.detail
    assert verify_chain(lines, expect_last=expected_last).ok


def test_an_extended_tail_is_found_with_expect_last() -> None:
    lines = chained(5)
    result = verify_chain(lines, expect_last=sha(lines[2]))
    assert (result.broken_at, result.kind) == (4, "tail_mismatch")
    assert result.detail == "lines 4-5 are after the expected last line 3 (appended)"


def test_an_edited_last_line_is_only_found_with_expect_last() -> None:
    lines = chained(3)
    expected_last = sha(lines[-1])
    lines[-1] = lines[-1].replace(b"user-3", b"user-9")
    assert verify_chain(lines).ok
    assert verify_chain(lines, expect_last=expected_last).kind == "tail_mismatch"


# --- ChainedJsonLinesSink -----------------------------------------------------------------
async def write_events(path: Path, numbers: range, fsync: bool = False) -> str:
    sink = ChainedJsonLinesSink.open(path, fsync=fsync)
    for n in numbers:
        await sink.write(event(n))
    last = sink.last_hash
    await sink.close()
    return last


async def test_the_sink_writes_a_verifiable_chain_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    last = await write_events(path, range(1, 4), fsync=True)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    assert all(line.endswith(b"\n") for line in lines)
    assert json.loads(lines[0])["prev"] == GENESIS_HASH
    assert {k: v for k, v in json.loads(lines[1]).items() if k != "prev"} == json.loads(
        event(2).to_json())
    result = verify_chain(lines)
    assert result.ok
    assert result.last_hash == last == last_hash_of(path)
    assert path.stat().st_mode & 0o777 == 0o600


def varied_events() -> list[AuditEvent]:
    """Events exercising the serialisation: unset facts, notes, non-ASCII text (escaped),
    quotes, control characters, an empty field list, a denial."""
    return [
        event(1),
        AuditEvent(time=1.0, request_id="r2", outcome="denied",
                   error_reason="CALLER_WITHOUT_PROFILE"),
        AuditEvent(time=1700000000.0005, request_id="r3", outcome="allowed", batch_id="b1",
                   caller="Zoë's app", caller_peer="spiffe://example.org/ns/app",
                   subject_sub="用户-1 😀", adhoc_reason='said "urgent"\n\ttab\\slash\u2028',
                   fields=(FieldDisclosure("dob", "redacted", note="step-up unmet"),
                           FieldDisclosure("név", "masked"))),
        AuditEvent(time=1700000002.25, request_id="r4", outcome="failed",
                   fields=[], event="rate_limited", jti=""),
    ]


def expected_file(events: list[AuditEvent], prev: str = GENESIS_HASH) -> bytes:
    """What the trail must hold, built the slow documented way: `chain_line` over
    `to_json`."""
    out = b""
    for e in events:
        line, prev = chain_line(e.to_json(), prev)
        out += line.encode("ascii") + b"\n"
    return out


async def test_the_sink_writes_exactly_what_chain_line_defines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = varied_events()
    sink = ChainedJsonLinesSink.open(path, fsync=True)
    for e in events:
        await sink.write(e)
    await sink.close()
    data = path.read_bytes()
    assert data == expected_file(events)
    assert data.isascii()
    result = verify_chain(data.splitlines(keepends=True))
    assert (result.ok, result.lines, result.last_hash) == (True, 4, sink.last_hash)


async def test_a_reopened_trail_chains_on_from_its_tail_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = varied_events()
    await write_all(path, events[:2])
    await write_all(path, events[2:])
    assert path.read_bytes() == expected_file(events)


async def test_an_unterminated_tail_gets_its_newline_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = varied_events()
    await write_all(path, events[:2])
    path.write_bytes(path.read_bytes()[:-1])  # a write cut just before its newline
    await write_all(path, events[2:])
    assert path.read_bytes() == expected_file(events)


async def write_all(path: Path, events: list[AuditEvent]) -> None:
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    for e in events:
        await sink.write(e)
    await sink.close()


async def test_the_chain_continues_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first_last = await write_events(path, range(1, 3))
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    assert sink.last_hash == first_last
    await sink.write(event(3))
    await sink.close()
    await write_events(path, range(4, 6))
    lines = path.read_bytes().splitlines()
    assert json.loads(lines[2])["prev"] == first_last
    result = verify_chain(lines)
    assert (result.ok, result.lines) == (True, 5)


async def test_concurrent_writes_still_form_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = ChainedJsonLinesSink.open(path, fsync=True)
    await asyncio.gather(*(sink.write(event(n)) for n in range(20)))
    await sink.close()
    result = verify_chain(path.read_bytes().splitlines())
    assert (result.ok, result.lines) == (True, 20)


async def test_a_tail_missing_only_its_newline_is_ended_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 3))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # a write cut before its newline
    await write_events(path, range(3, 4))
    result = verify_chain(path.read_bytes().splitlines(keepends=True))
    assert (result.ok, result.lines) == (True, 3)


@pytest.mark.parametrize(
    "tail",
    [
        # (A line torn mid-write is cut and recorded instead: test_audit_repair.py.)
        b'{"event":"disclosure"}\n',  # a line without prev (an unchained trail)
        b"\n",
    ],
)
async def test_opening_on_a_damaged_tail_fails_closed(tmp_path: Path, tail: bytes) -> None:
    path = tmp_path / "audit.jsonl"
    await write_events(path, range(1, 3))
    with path.open("ab") as f:
        f.write(tail)
    with pytest.raises(AuditChainError, match="not a chained audit line"):
        ChainedJsonLinesSink.open(path, fsync=False)
    with pytest.raises(AuditChainError):
        last_hash_of(path)


def test_the_tail_read_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 10) + b"\n")
    with pytest.raises(AuditChainError, match="longer than"):
        last_hash_of(path)


def test_last_hash_of_a_missing_or_empty_file_is_genesis(tmp_path: Path) -> None:
    assert last_hash_of(tmp_path / "none.jsonl") == GENESIS_HASH
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert last_hash_of(tmp_path / "empty.jsonl") == GENESIS_HASH


async def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = ChainedJsonLinesSink.open(path, fsync=False)
    try:
        with pytest.raises(AuditChainError, match="another process"):
            ChainedJsonLinesSink.open(path, fsync=False)
    finally:
        await sink.close()
    await write_events(path, range(1, 2))  # free again once closed


async def test_after_a_failed_write_the_sink_stays_closed(tmp_path: Path) -> None:
    class FailingOnce:
        """A binary target whose first write fails, as a full disk would."""

        def __init__(self) -> None:
            self.data = b""
            self.calls = 0

        def write(self, data: bytes) -> int:
            self.calls += 1
            if self.calls == 1:
                raise OSError(28, "No space left on device")
            self.data += data
            return len(data)

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            raise OSError("no fd")

        def close(self) -> None:
            pass

    target = FailingOnce()
    sink = ChainedJsonLinesSink(target)  # type: ignore[arg-type]  # a duck-typed BinaryIO
    with pytest.raises(AuditUnavailable):
        await sink.write(event(1))
    with pytest.raises(AuditUnavailable) as refused:
        await sink.write(event(2))
    assert "tail is uncertain" in str(refused.value.__cause__)
    assert (target.calls, target.data) == (1, b"")  # the second line was never tried
    assert sink.last_hash == GENESIS_HASH
    await sink.close()  # shutting down still works (the gateway's other closers run)


async def test_stdout_starts_a_chain_at_genesis(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    sink = ChainedJsonLinesSink.open(None, fsync=True)
    await sink.write(event(1))
    await sink.write(event(2))
    await sink.close()
    out = capfdbinary.readouterr().out.splitlines()
    assert json.loads(out[0])["prev"] == GENESIS_HASH
    assert verify_chain(out).ok
    assert not sys.stdout.closed


# --- audit verify CLI ---------------------------------------------------------------------
def verify_args(path: Path, expect_last: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(audit_command="verify", file=path, expect_last=expect_last)


def test_cli_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    lines = chained(3)
    path.write_bytes(b"".join(lines))
    assert audit_cli.run(verify_args(path)) == 0
    assert capsys.readouterr().out == f"ok: 3 events, last hash {sha(lines[-1])}\n"
    assert audit_cli.run(verify_args(path, sha(lines[-1]))) == 0


def test_cli_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    lines = chained(4)
    del lines[1]
    path.write_bytes(b"".join(lines))
    assert audit_cli.run(verify_args(path)) == 1
    assert capsys.readouterr().out.startswith("broken at line 2: ")


def test_cli_expect_last_catches_truncation(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    lines = chained(4)
    path.write_bytes(b"".join(lines[:2]))
    assert audit_cli.run(verify_args(path, sha(lines[-1]))) == 1
    assert capsys.readouterr().out.startswith("broken at line 3: the chain ends at line 2")


def test_cli_missing_file_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert audit_cli.run(verify_args(tmp_path / "nope.jsonl")) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "nope.jsonl: no such file" in captured.err
    assert audit_cli.run(verify_args(tmp_path)) == 2  # a directory


def test_cli_parses_and_checks_the_expected_hash() -> None:
    parser = argparse.ArgumentParser()
    audit_cli.add_arguments(parser)
    args = parser.parse_args(["verify", "f.jsonl", "--expect-last", "AB" * 32])
    assert (args.audit_command, args.file, args.expect_last) == (
        "verify", Path("f.jsonl"), "ab" * 32)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["verify", "f.jsonl", "--expect-last", "abc"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(chained(2)))
    done = subprocess.run(
        [sys.executable, "-m", "piigate.cli.audit", "verify", str(path)],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("ok: 2 events, last hash ")
    done = subprocess.run(
        [sys.executable, "-m", "piigate.cli.audit", "verify", str(tmp_path / "nope")],
        capture_output=True, text=True, cwd=REPO, check=False, timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
