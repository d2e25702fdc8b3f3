"""Where chained lines go: a locked, append-only trail file, or a stream such as stdout.

Rules for the file:

1. One writer per file: an exclusive `flock` is held while open, because two writers
   appending to one file would fork the chain.
2. At open, the file's tail (at most two lines of `MAX_LINE_BYTES`) is read back, so the
   chain continues from its last line.
3. A torn final line (unterminated and not a chained line: a crash mid-write, or a restart
   after a write the disk refused) is cut off, and its length and SHA-256 are handed to the
   sink to record in a repair marker; the operator is told in the log. Anything else that
   is not a chained line (a whole foreign line, a damaged line *before* the torn one, a
   line too long to be ours) refuses the open: that is not a torn write, and chaining over
   it would hide it.
4. The file is written with unbuffered `write(2)` calls, so a failed write leaves nothing
   behind in a buffer to be flushed later (at close): the sink cuts a partial line off with
   `ftruncate(2)` and nothing can bring it back.

The system calls go through `Disk`, so tests can fail them as a full or failing disk would.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from piigate.audit.format import GENESIS_HASH, MAX_LINE_BYTES, line_hash, prev_of, strip_newline

log = logging.getLogger(__name__)


class AuditChainError(Exception):
    """A chained audit file cannot be continued safely (at start-up, not per request)."""


@dataclass(frozen=True, slots=True)
class Disk:
    """The system calls made on a trail file (`os.write`, `os.fsync`, `os.ftruncate`)."""

    write: Callable[[int, bytes], int] = os.write
    fsync: Callable[[int], None] = os.fsync
    truncate: Callable[[int, int], None] = os.ftruncate


@dataclass(frozen=True, slots=True)
class Tail:
    """What the file ends with, once any torn line is cut (rules 2 and 3).

    `end` is the file's size; `terminated` whether its last line has its newline (a write
    cut just before it leaves a whole line without one). `torn_bytes`/`torn_sha256`
    describe the torn line cut off, if any.
    """

    last_hash: str
    end: int
    terminated: bool
    torn_bytes: int = 0
    torn_sha256: str | None = None


class TrailFile:
    """A trail file opened for appending, locked (rule 1), written through `disk`."""

    can_cut = True

    def __init__(self, fd: int, disk: Disk) -> None:
        self._fd: int | None = fd
        self._disk = disk

    @classmethod
    def open(cls, path: Path, disk: Disk) -> tuple[TrailFile, Tail]:
        """Open (creating, owner-only) and lock `path`, and cut any torn final line."""
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditChainError(
                    f"{path}: another process is writing this audit trail"
                ) from None
            tail = read_tail(fd, path)
            if tail.torn_sha256 is not None:
                try:
                    disk.truncate(fd, tail.end)
                except OSError as exc:
                    raise AuditChainError(
                        f"{path}: cannot cut the torn final line ({exc.strerror or exc})"
                    ) from exc
                log.warning(
                    "audit trail %s: cut a torn final line (%d bytes, sha256 %s) left by an "
                    "interrupted write; the chain resumes after a repair marker recording it",
                    path, tail.torn_bytes, tail.torn_sha256,
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, disk), tail

    def append(self, data: bytes) -> None:
        """Write all of `data` at the end; on OSError part of it may be there."""
        fd = self._require_fd()
        done = 0
        while done < len(data):  # write(2) may take part of it (a filling disk)
            written = self._disk.write(fd, data[done:] if done else data)
            if written <= 0:  # never loop on a write that makes no progress
                raise OSError(0, "the write made no progress")
            done += written

    def sync(self) -> None:
        """fsync the file (run in a worker thread by the sink)."""
        self._disk.fsync(self._require_fd())

    def cut(self, end: int) -> None:
        """Truncate the file to `end` bytes: back to the end of its last complete line."""
        self._disk.truncate(self._require_fd(), end)

    def close(self) -> None:
        """Close the file, which releases its lock. Safe to call again."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _require_fd(self) -> int:
        if self._fd is None:
            raise ValueError("the audit trail file is closed")
        return self._fd


class TrailStream:
    """A binary stream (stdout, or a test's buffer): written and flushed per line, never
    synced, and never cut back, since what went out cannot be taken back."""

    can_cut = False

    def __init__(self, stream: BinaryIO, owned: bool = False) -> None:
        self._stream = stream
        self._owned = owned  # close the stream on close (never stdout)

    def append(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    def sync(self) -> None:
        os.fsync(self._stream.fileno())

    def cut(self, end: int) -> None:
        raise OSError(0, "a stream cannot be cut back")

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._stream.close()


def last_hash_of(path: Path) -> str:
    """The hash to chain the next line of `path` on: its last line's, or the genesis hash
    for a missing or empty file. Raises AuditChainError if the last line is damaged
    (a torn one included: this only reads, it repairs nothing)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return GENESIS_HASH
    try:
        tail = read_tail(fd, path)
    finally:
        os.close(fd)
    if tail.torn_sha256 is not None:
        raise AuditChainError(
            f"{path}: the last line is not a chained audit line (a torn write); "
            "the gateway cuts it at its next start"
        )
    return tail.last_hash


def read_tail(fd: int, path: Path) -> Tail:
    """The file's tail (rules 2 and 3), without changing the file."""
    size = os.fstat(fd).st_size
    if size == 0:
        return Tail(GENESIS_HASH, 0, True)
    # Room for a torn line and the whole line before it.
    start = max(0, size - 2 * (MAX_LINE_BYTES + 1))
    data = os.pread(fd, size - start, start)
    terminated = data.endswith(b"\n")
    body = strip_newline(data)
    cut = body.rfind(b"\n")
    last = body[cut + 1 :]
    _check_length(last, cut < 0 and start > 0, path)
    if prev_of(last) is not None:
        return Tail(line_hash(last), size, terminated)
    if terminated:
        raise AuditChainError(
            f"{path}: the last line is not a chained audit line (not a chained "
            "trail, or edited); run `piigate audit verify`"
        )
    torn = Tail(GENESIS_HASH, start + cut + 1, True, len(last), hashlib.sha256(last).hexdigest())
    if cut < 0:  # the torn line is the file's only line
        return torn
    before = body[:cut]
    before_cut = before.rfind(b"\n")
    whole = before[before_cut + 1 :]
    _check_length(whole, before_cut < 0 and start > 0, path)
    if prev_of(whole) is None:
        raise AuditChainError(
            f"{path}: the last line is not a chained audit line, nor is the one before "
            "it; run `piigate audit verify`"
        )
    return Tail(line_hash(whole), torn.end, True, torn.torn_bytes, torn.torn_sha256)


def _check_length(line: bytes, starts_before_window: bool, path: Path) -> None:
    if starts_before_window or len(line) > MAX_LINE_BYTES:
        raise AuditChainError(
            f"{path}: the last line is longer than {MAX_LINE_BYTES} bytes; "
            "run `piigate audit verify`"
        )
