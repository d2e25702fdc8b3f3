"""The verifier on hostile input: whatever a line holds, the answer is a verdict (a broken
chain at that line), never an exception; and line lengths are bounded as it reads."""

from __future__ import annotations

import argparse
import hashlib
import io
import random
from pathlib import Path

import pytest

from piigate.audit.format import GENESIS_HASH, MAX_LINE_BYTES, chain_line, parse_line
from piigate.audit.verify import read_lines, verify_chain
from piigate.cli import audit as audit_cli
from tests.support.audit_events import numbered_event as event


def chained(count: int) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for n in range(1, count + 1):
        line, prev = chain_line(event(n).to_json(), prev)
        lines.append(line.encode() + b"\n")
    return lines


HOSTILE = [
    b"[" * 1000,  # RecursionError in a recursive parser
    b"{" * 1000,
    b'{"a":' * 1000,
    b"[" * 100_000,
    b'{"prev":"' + b"0" * 64 + b'","x":' + b"[" * 900 + b"]" * 900 + b"}",  # deep but closed
    b'{"prev":"' + b"0" * 64 + b'","x":NaN}',
    b'{"prev":"' + b"0" * 64 + b'","x":' + b"9" * 5000 + b"}",  # past int's digit limit
    b'{"prev":"' + b"0" * 64 + b'","x":1e999}',
    b'{"prev":"' + b"0" * 64 + b'","prev":"' + b"0" * 64 + b'"}',  # duplicate member
    b"\xff\xfe\x00",
    b'"\\ud800"',
    b"\x00" * 10,
]


@pytest.mark.parametrize("line", HOSTILE, ids=range(len(HOSTILE)))
@pytest.mark.parametrize("where", [0, 2, 4])
def test_a_hostile_line_is_a_broken_chain_not_an_exception(line: bytes, where: int) -> None:
    lines = chained(4)
    lines.insert(where, line + b"\n")
    result = verify_chain(lines)
    assert (result.ok, result.broken_at, result.kind) == (False, where + 1, "edited")
    assert result.lines == 5
    assert parse_line(line) is None


def test_the_cli_reports_a_hostile_line_as_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(chained(2)) + b"[" * 1000 + b"\n")
    args = argparse.Namespace(audit_command="verify", file=path, expect_last=None)
    assert audit_cli.run(args) == 1
    assert capsys.readouterr().out.startswith("broken at line 3: not a well-formed")


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1729)  # fixed: the same inputs on every run
    alphabet = b'[]{}":,0123456789abcdef-+.eE \\ntruefalsn\xff\x00prev'
    for _ in range(2000):
        lines = [bytes(rng.choice(alphabet) for _ in range(rng.randrange(60)))
                 for _ in range(rng.randrange(1, 4))]
        verify_chain(chained(1) + lines)  # returns a verdict, whatever it is


def test_lines_are_read_in_bounded_pieces_and_counted_right() -> None:
    good = chained(3)
    long_line = b"x" * (3 * MAX_LINE_BYTES) + b"\n"
    stream = io.BytesIO(good[0] + long_line + good[1] + good[2])
    lines = list(read_lines(stream))
    assert len(lines) == 4
    assert max(len(line) for line in lines) == MAX_LINE_BYTES + 1
    assert lines[0] == good[0]
    assert lines[2:] == good[1:]
    result = verify_chain(lines)
    assert (result.broken_at, result.kind, result.lines) == (2, "edited", 4)


def test_a_line_just_within_the_limit_is_read_whole() -> None:
    line = b"y" * MAX_LINE_BYTES + b"\n"
    assert list(read_lines(io.BytesIO(line + line))) == [line, line]
    unterminated = b"z" * (MAX_LINE_BYTES + 5)  # at the end, without a newline
    assert list(read_lines(io.BytesIO(unterminated))) == [unterminated[: MAX_LINE_BYTES + 1]]


def test_a_forged_repair_marker_cannot_put_escapes_on_the_operators_screen() -> None:
    lines = chained(1)
    marker = ('{"event":"audit_repair","time":"2026-01-01T00:00:00.000+00:00",'
              '"failed_since":"\\u001b[2J","error":"\\u001b]0;owned\\u0007","unrecorded":3,'
              '"torn_bytes":1,"torn_sha256":"\\u001b[31m"}')
    line, _ = chain_line(marker, hashlib.sha256(lines[0].rstrip(b"\n")).hexdigest())
    result = verify_chain([*lines, line.encode()])
    assert result.ok
    [(number, repair)] = result.repairs
    assert number == 2
    assert (repair.failed_since, repair.error, repair.torn_sha256) == (None, None, None)
    assert "\x1b" not in repair.describe()
