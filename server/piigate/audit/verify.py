"""Checking a chained audit trail (`piigate audit verify`): the first broken link, named.

The input may be hostile: any line that is not a well-formed chained line (bad JSON,
nesting deep enough to exhaust a recursive parser, bad UTF-8, more than `MAX_LINE_BYTES`)
is reported as a broken chain, never raised. Memory stays bounded however long the file
is, or its lines (`read_lines`).

Repair markers (`piigate.audit.format`, rule 4) are links like any other; the ones found
in the chain are reported alongside the result, so an operator sees where the writer cut a
torn line or resumed after an outage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

from piigate.audit.format import (
    GENESIS_HASH,
    MAX_LINE_BYTES,
    Repair,
    line_hash,
    parse_line,
    prev_of,
    strip_newline,
)

# How many recent line hashes `verify_chain` remembers to recognise an insertion.
LOOKBEHIND_LINES = 4096
# How many repair markers a result lists (a hostile file may hold millions).
MAX_REPORTED_REPAIRS = 100

BreakKind = Literal[
    "edited", "edited_or_deleted", "inserted", "reordered", "restarted", "tail_mismatch"
]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a chain.

    `lines` and `last_hash` describe the whole input even when it is broken. `broken_at`
    is the first line (1-based) found not to belong where it stands; `detail` says why,
    worded to follow "broken at line N: ". `repairs` are the repair markers met before any
    break, as (line number, what it records), the first `MAX_REPORTED_REPAIRS` of them.
    """

    lines: int
    last_hash: str
    broken_at: int | None = None
    kind: BreakKind | None = None
    detail: str = ""
    repairs: tuple[tuple[int, Repair], ...] = ()

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def read_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of `stream`, each read in bounded memory: a line longer than
    `MAX_LINE_BYTES` (never one of ours) comes as its first `MAX_LINE_BYTES + 1` bytes,
    which verification reports as broken, and the rest of it is skipped."""
    limit = MAX_LINE_BYTES + 1
    while line := stream.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                pass
            line = line[:limit]
        yield line


def verify_chain(lines: Iterable[bytes], expect_last: str | None = None) -> VerifyResult:
    """Check every link of a chained audit trail, in one pass and bounded memory.

    `lines` are the file's lines, each with or without its `\\n`. With `expect_last`,
    the chain must also end at that hash, which catches a truncated or extended tail.
    """
    recent: OrderedDict[str, int] = OrderedDict()  # line hash -> line number, bounded
    repairs: list[tuple[int, Repair]] = []
    expected = GENESIS_HASH
    number = 0
    rest = iter(lines)
    for raw in rest:
        number += 1
        line = strip_newline(raw)
        this_hash = line_hash(line)
        event = parse_line(line)
        if event is None:
            detail = (
                "not a well-formed chained audit line "
                "(it was edited, or torn by an interrupted write)"
            )
            result = _with_rest(rest, number, this_hash, number, "edited", detail)
            return _with_repairs(result, repairs)
        if event["prev"] != expected:
            result = _classify_break(rest, number, this_hash, str(event["prev"]), expected,
                                     recent)
            return _with_repairs(result, repairs)
        repair = Repair.from_dict(event)
        if repair is not None and len(repairs) < MAX_REPORTED_REPAIRS:
            repairs.append((number, repair))
        recent[this_hash] = number
        if len(recent) > LOOKBEHIND_LINES:
            recent.popitem(last=False)
        expected = this_hash
    if expect_last is None or expect_last == expected:
        return VerifyResult(number, expected, repairs=tuple(repairs))
    return _with_repairs(_tail_mismatch(number, expected, expect_last, recent), repairs)


def _with_repairs(result: VerifyResult, repairs: list[tuple[int, Repair]]) -> VerifyResult:
    return VerifyResult(result.lines, result.last_hash, result.broken_at, result.kind,
                        result.detail, tuple(repairs))


def _scan(
    rest: Iterator[bytes],
    number: int,
    last_hash: str,
    find_hash: str | None = None,
    find_prev: str | None = None,
) -> tuple[int, str, int | None, int | None]:
    """Read the remaining lines: their count and last hash, and the first line hashing to
    `find_hash` and the first whose prev is `find_prev`."""
    with_hash: int | None = None
    with_prev: int | None = None
    for raw in rest:
        number += 1
        line = strip_newline(raw)
        last_hash = line_hash(line)
        if with_hash is None and last_hash == find_hash:
            with_hash = number
        if with_prev is None and find_prev is not None and prev_of(line) == find_prev:
            with_prev = number
    return number, last_hash, with_hash, with_prev


def _with_rest(
    rest: Iterator[bytes], number: int, this_hash: str, broken_at: int, kind: BreakKind, detail: str
) -> VerifyResult:
    total, last_hash, _, _ = _scan(rest, number, this_hash)
    return VerifyResult(total, last_hash, broken_at, kind, detail)


def _classify_break(
    rest: Iterator[bytes],
    number: int,
    this_hash: str,
    prev: str,
    expected: str,
    recent: OrderedDict[str, int],
) -> VerifyResult:
    """Line `number` claims predecessor `prev` where `expected` stands: say what happened.

    Order matters: a swap also looks like an insertion, so "reordered" is tried first.
    """
    if prev == GENESIS_HASH:
        detail = (
            "a second chain starts here (prev is the genesis hash): lines before it "
            "were deleted, or another chain was appended"
        )
        return _with_rest(rest, number, this_hash, number, "restarted", detail)
    if prev in recent:  # the line links back past its predecessor
        anchor = recent[prev]
        detail = (
            f"{_lines_phrase(anchor + 1, number - 1)} not part of the chain "
            f"(inserted): line {number} links to line {anchor}"
        )
        return _with_rest(rest, number, this_hash, anchor + 1, "inserted", detail)
    total, last_hash, with_hash, with_prev = _scan(rest, number, this_hash, prev, expected)
    if with_hash is not None:
        detail = f"out of order: the line it follows is line {with_hash}"
        return VerifyResult(total, last_hash, number, "reordered", detail)
    if with_prev is not None:
        detail = (
            f"{_lines_phrase(number, with_prev - 1)} not part of the chain "
            f"(inserted): line {with_prev} links to line {number - 1}"
        )
        return VerifyResult(total, last_hash, number, "inserted", detail)
    if number == 1:
        detail = "its prev is not the genesis hash: lines were deleted before it, or it was edited"
    else:
        detail = (
            f"it does not follow line {number - 1}: line {number - 1} was edited, "
            "lines were deleted between them, or this line's prev was altered"
        )
    return VerifyResult(total, last_hash, number, "edited_or_deleted", detail)


def _tail_mismatch(
    number: int, last_hash: str, expect_last: str, recent: OrderedDict[str, int]
) -> VerifyResult:
    if expect_last in recent:
        anchor = recent[expect_last]
        detail = (
            f"{_lines_phrase(anchor + 1, number)} after the expected last line {anchor} (appended)"
        )
        return VerifyResult(number, last_hash, anchor + 1, "tail_mismatch", detail)
    detail = (
        f"the chain ends at line {number} with hash {last_hash}, not the expected "
        f"{expect_last}: lines were cut off the end, or line {number} was edited"
    )
    return VerifyResult(number, last_hash, number + 1, "tail_mismatch", detail)


def _lines_phrase(first: int, last: int) -> str:
    return f"line {first} is" if first == last else f"lines {first}-{last} are"
