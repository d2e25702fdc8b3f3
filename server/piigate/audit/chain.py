"""A tamper-evident audit trail: each JSON line names the SHA-256 of the line before it.

Format. A chained line is the event's JSON object with one more member, `prev`: compact
(`,` and `:` separators), keys sorted, ASCII only, exactly as `AuditEvent.to_json` writes
it, and terminated by one `\\n`. Rules:

1. The hash of a line is the lowercase hex SHA-256 of its exact bytes *without* the
   terminating `\\n`; `prev` is part of those bytes, so each line commits to the whole
   history before it.
2. The first line of a chain has `prev` = `GENESIS_HASH`, 64 zeros (no line hashes to it).
3. The chain continues across restarts: at open, the sink reads the file's last line
   (at most `MAX_LINE_BYTES` from the end) and chains on from its hash. It refuses to open
   when that line is not a well-formed chained line (a torn write, a foreign file), so a
   damaged tail is looked at by an operator instead of being chained over.
4. One writer per file: the sink holds an exclusive `flock` while open, because two
   writers appending to one file would fork the chain.

Writing. `ChainedJsonLinesSink` serialises each event once, straight from
`AuditEvent.to_dict` plus `prev`, and hashes the bytes it writes; `chain_line` applies the
same rule to an event's JSON, for tools and tests. With fsync configured, concurrent
writers share fsyncs (group commit), and each still returns only once its line is on disk.

What chaining can prove: any edit, deletion, insertion or reordering of lines *before*
the last one breaks a link, and `verify_chain` names the first broken one. What it cannot:
cutting lines off the *end* leaves a shorter valid chain, and so does editing the last
line and recomputing nothing else. Against that, keep the last hash somewhere else (the
sink's `last_hash`, e.g. shipped to a log service) and pass it as `expect_last`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from piigate.audit.event import JSON_ENCODER, AuditEvent
from piigate.errors import AuditUnavailable

GENESIS_HASH = "0" * 64
# Audit lines are small (no PII, a bounded field list, adhoc_reason <= 256 chars); a last
# line longer than this is not one of ours.
MAX_LINE_BYTES = 64 * 1024
# How many recent line hashes `verify_chain` remembers to recognise an insertion; memory
# stays bounded however long the file is.
LOOKBEHIND_LINES = 4096

_HASH = re.compile(r"[0-9a-f]{64}")

BreakKind = Literal[
    "edited", "edited_or_deleted", "inserted", "reordered", "restarted", "tail_mismatch"
]


class AuditChainError(Exception):
    """A chained audit file cannot be continued safely (at start-up, not per request)."""


def line_hash(line: bytes) -> str:
    """The hash of one line's bytes, without its terminating newline (rule 1)."""
    return hashlib.sha256(line).hexdigest()


def chain_line(event_json: str, prev_hash: str) -> tuple[str, str]:
    """The chained line for `event_json` after a line hashing to `prev_hash`, and its hash.

    `event_json` must be one JSON object without a `prev` member. The line comes without
    its newline.
    """
    if not _HASH.fullmatch(prev_hash):
        raise ValueError("prev_hash must be 64 lowercase hex digits")
    event = json.loads(event_json)
    if not isinstance(event, dict):
        raise ValueError("an audit event must be a JSON object")
    if "prev" in event:
        raise ValueError("an audit event must not carry its own prev")
    line, digest = _chain(event, prev_hash)
    return line.decode("ascii"), digest


def last_hash_of(path: Path) -> str:
    """The hash to chain the next line of `path` on: its last line's, or the genesis hash
    for a missing or empty file. Raises AuditChainError if the last line is damaged."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return GENESIS_HASH
    try:
        return _tail_hash(fd, path)[0]
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of checking a chain.

    `lines` and `last_hash` describe the whole input even when it is broken. `broken_at`
    is the first line (1-based) found not to belong where it stands; `detail` says why,
    worded to follow "broken at line N: ".
    """

    lines: int
    last_hash: str
    broken_at: int | None = None
    kind: BreakKind | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify_chain(lines: Iterable[bytes], expect_last: str | None = None) -> VerifyResult:
    """Check every link of a chained audit trail, in one pass and bounded memory.

    `lines` are the file's lines, each with or without its `\\n`. With `expect_last`,
    the chain must also end at that hash, which catches a truncated or extended tail.
    """
    recent: OrderedDict[str, int] = OrderedDict()  # line hash -> line number, bounded
    expected = GENESIS_HASH
    number = 0
    rest = iter(lines)
    for raw in rest:
        number += 1
        line = _strip_newline(raw)
        this_hash = line_hash(line)
        prev = _prev_of(line)
        if prev is None:
            detail = (
                "not a well-formed chained audit line "
                "(it was edited, or torn by an interrupted write)"
            )
            return _with_rest(rest, number, this_hash, number, "edited", detail)
        if prev != expected:
            return _classify_break(rest, number, this_hash, prev, expected, recent)
        recent[this_hash] = number
        if len(recent) > LOOKBEHIND_LINES:
            recent.popitem(last=False)
        expected = this_hash
    if expect_last is None or expect_last == expected:
        return VerifyResult(number, expected)
    return _tail_mismatch(number, expected, expect_last, recent)


class ChainedJsonLinesSink:
    """An `AuditSink` writing chained JSON lines, to a file or stdout.

    A write serialises its event once (`AuditEvent.to_dict` plus `prev`, in the canonical
    form), hashes those bytes and hands the line to `target` in one write and flush; the
    chain advances only once `target` has taken the line. Writing is synchronous, so
    concurrent writers still form one chain, in the order they wrote.

    With `fsync`, a write returns only after an fsync that *began after its line was
    written* has succeeded (PII is returned only after that). Concurrent writers share
    those fsyncs (group commit): one runs at a time and covers every line written before
    it began; a writer whose line came later waits for it and then starts (or joins) the
    next. Under load one fsync covers many events; a lone writer pays exactly one, with no
    timer added.

    After one failed write or fsync it refuses every later one: the file's tail (or what
    reached the disk) is then unknown, and chaining on a guess would break the chain
    silently; a restart re-reads the real tail.
    """

    def __init__(
        self,
        target: BinaryIO,
        last_hash: str = GENESIS_HASH,
        fsync: bool = False,
        owned: bool = False,
        terminate_tail: bool = False,
    ) -> None:
        self._target = target
        self._last_hash = last_hash
        self._fsync = fsync
        self._owned = owned  # close `target` on close (a file; not stdout)
        # The file's last line is whole but lacks its newline (a write cut just before
        # it): end that line before appending, or the next line would be glued to it.
        self._prefix = b"\n" if terminate_tail else b""
        self._closed = False
        self._broken: OSError | None = None  # why every later write is refused
        self._written = 0  # lines handed to `target` by this sink
        self._durable = 0  # of those, how many an fsync has covered
        self._syncing: asyncio.Task[None] | None = None  # the fsync under way, if any

    @classmethod
    def open(cls, path: Path | None, fsync: bool) -> ChainedJsonLinesSink:
        """Append to `path`, chaining on from its last line; stdout if None.

        On stdout each process starts a new chain at the genesis hash (stdout cannot be
        read back); `verify_chain` reports such a restart as kind "restarted".
        """
        if path is None:
            return cls(sys.stdout.buffer, fsync=False)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditChainError(
                    f"{path}: another process is writing this audit trail"
                ) from None
            last_hash, terminated = _tail_hash(fd, path)
            target = os.fdopen(fd, "ab")
        except BaseException:
            os.close(fd)
            raise
        return cls(target, last_hash, fsync=fsync, owned=True, terminate_tail=not terminated)

    @property
    def last_hash(self) -> str:
        """The hash of the last line written (or found at open): the value to keep
        elsewhere and later pass to `verify_chain(..., expect_last=...)`."""
        return self._last_hash

    async def write(self, event: AuditEvent) -> None:
        """Append `event`'s chained line; with fsync, return once it is on disk. Raises
        AuditUnavailable when the line cannot be written or made durable."""
        mark = self._append(event)
        if self._fsync:
            await self._wait_durable(mark)

    async def close(self) -> None:
        """Refuse new writes, let the lines already written become durable (their writers
        may be waiting for that), then close the file, which releases its lock. Safe to
        call again, also after a failure."""
        self._closed = True
        if self._fsync:
            with contextlib.suppress(AuditUnavailable):  # the writers got it already
                await self._wait_durable(self._written)
        while self._syncing is not None:  # a broken sink's last fsync: never close under it
            await asyncio.shield(self._syncing)
        if self._owned:
            self._owned = False
            self._target.close()

    def _append(self, event: AuditEvent) -> int:
        """Chain `event` and write its line; how many lines are written now, which is
        the mark this line's durability is measured against."""
        if self._closed:
            raise AuditUnavailable() from ValueError("write to a closed audit sink")
        if self._broken is not None:
            raise AuditUnavailable() from self._broken
        try:
            line, new_hash = _chain(event.to_dict(), self._last_hash)
        except (OSError, ValueError) as exc:  # nothing written: the chain is intact
            raise AuditUnavailable() from exc
        try:
            self._target.write(self._prefix + line + b"\n")
            self._target.flush()
        except BaseException as exc:
            self._break("an earlier audit write failed; the chain's tail is uncertain", exc)
            if isinstance(exc, (OSError, ValueError)):
                raise AuditUnavailable() from exc
            raise
        self._prefix = b""
        self._last_hash = new_hash
        self._written += 1
        return self._written

    async def _wait_durable(self, mark: int) -> None:
        """Return once the first `mark` lines are covered by a successful fsync.

        The running fsync covers this line only if it began after the line was written;
        if not, once it ends, the first waiter left uncovered starts the next one and
        the others join it. The fsync is shielded: a cancelled writer must not cancel
        the fsync other writers are waiting on.
        """
        while self._durable < mark:
            if self._broken is not None:
                raise AuditUnavailable() from self._broken
            if self._syncing is None:
                self._syncing = asyncio.create_task(self._fsync_written())
            await asyncio.shield(self._syncing)

    async def _fsync_written(self) -> None:
        """One fsync, covering every line written before it began.

        It never raises, so no failure goes unretrieved when its waiters are gone: a
        failure breaks the sink, and each waiter raises its own AuditUnavailable. Any
        failure counts, not only OSError: what reached the disk is then unknown.
        """
        covers = self._written
        try:
            await asyncio.to_thread(os.fsync, self._target.fileno())
        except Exception as exc:
            self._break("an audit fsync failed; earlier lines may not be on disk", exc)
        else:
            self._durable = covers
        finally:
            self._syncing = None  # before the waiters wake: they may start the next one

    def _break(self, reason: str, cause: BaseException) -> None:
        """Refuse every later write (the first reason stays)."""
        if self._broken is None:
            self._broken = OSError(reason)
            self._broken.__cause__ = cause


def _chain(event: dict[str, object], prev_hash: str) -> tuple[bytes, str]:
    """The chained line (without newline) for `event` after `prev_hash`, and its hash.
    Adds `prev` to `event` in place."""
    event["prev"] = prev_hash
    line = _canonical(event).encode("ascii")
    return line, line_hash(line)


def _canonical(event: dict[str, object]) -> str:
    """The format's one serialisation (compact, keys sorted, ASCII only): the same as
    `AuditEvent.to_json`, so chaining adds `prev` and changes nothing else."""
    return JSON_ENCODER.encode(event)


def _strip_newline(raw: bytes) -> bytes:
    return raw[:-1] if raw.endswith(b"\n") else raw


def _prev_of(line: bytes) -> str | None:
    """The `prev` of a well-formed chained line; None for anything else, including a
    line that parses but is not in canonical form (so it was not written by us)."""
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(event, dict):
        return None
    prev = event.get("prev")
    if not isinstance(prev, str) or not _HASH.fullmatch(prev):
        return None
    if _canonical(event).encode("ascii") != line:
        return None
    return prev


def _tail_hash(fd: int, path: Path) -> tuple[str, bool]:
    """The hash of the file's last line and whether that line ends with a newline."""
    size = os.fstat(fd).st_size
    if size == 0:
        return GENESIS_HASH, True
    start = max(0, size - (MAX_LINE_BYTES + 1))
    tail = os.pread(fd, size - start, start)
    terminated = tail.endswith(b"\n")
    body = _strip_newline(tail)
    cut = body.rfind(b"\n")
    if cut < 0 and start > 0:
        raise AuditChainError(
            f"{path}: the last line is longer than {MAX_LINE_BYTES} bytes; "
            "run `piigate audit verify`"
        )
    last = body[cut + 1 :]
    if _prev_of(last) is None:
        raise AuditChainError(
            f"{path}: the last line is not a chained audit line (a torn "
            "write, or not a chained trail); run `piigate audit verify`"
        )
    return line_hash(last), terminated


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
        line = _strip_newline(raw)
        last_hash = line_hash(line)
        if with_hash is None and last_hash == find_hash:
            with_hash = number
        if with_prev is None and find_prev is not None and _prev_of(line) == find_prev:
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
