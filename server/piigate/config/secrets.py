"""Files that hold secrets: who may read them, how they are read, and how a change on disk
is picked up without a restart.

Permissions (the rule PostgreSQL applies to `ssl_key_file`, checked on the file a
symlink points to, as Kubernetes secret volumes are symlinks into `..data/`):

1. Nobody but the owner and its group may have any access: no "other" bits, ever.
2. The group may read, and only read, when the file is owned by root. That is how
   Kubernetes mounts a secret for a non-root pod with `fsGroup`: root-owned, the pod's
   group, `defaultMode` 0400 widened by the kubelet to 0440. Any other owner: no group
   bits at all (0600 or stricter).
3. Only regular files are held to this (a pipe or a device is no key file; the size and
   emptiness checks refuse those anyway).

A refused file is never read. Messages name the file and its mode and say how to fix it,
never what it holds.

Reloading: `FileWatcher` polls the files' identity (device, inode, size, mtime, ctime of
the target) every `interval_s` and reloads what changed; `trigger()` (SIGHUP) reloads
everything now. A reload re-reads and validates in full before anything is replaced; one
that fails (missing, empty, unreadable, refused, bad PEM) keeps the current material and
is logged by source and problem, and counted. Reloads run on the event loop between
requests, so a request already under way keeps what it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# A secret is an API key or a binding key; anything longer is not one (e.g. /dev/zero).
SECRET_MAX_BYTES = 64 * 1024


class SecretFileInvalid(Exception):
    """A secret file that cannot be used; the message names the file, never its content."""


def mode_problem(st: os.stat_result, shown: str, path: Path) -> str | None:
    """Rules 1-3 for a file's status: None when it is private enough, else the message."""
    if not stat.S_ISREG(st.st_mode):
        return None
    mode = stat.S_IMODE(st.st_mode)
    allowed_group = stat.S_IRGRP if st.st_uid == 0 else 0
    if mode & (stat.S_IRWXO | (stat.S_IRWXG & ~allowed_group)):
        return (f"{shown} has mode {mode:04o}, open to group or others: a key file must be "
                f"private (run `chmod 600 {path}`)")
    return None


def key_file_problem(path: Path, shown: str) -> str | None:
    """The permission problem of an existing key file, if any (a missing file is
    reported where its existence is checked)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return mode_problem(st, shown, path)


def check_key_file(path: Path, shown: str) -> None:
    """Refuse (SecretFileInvalid) a key file that group or others may access, or that
    cannot be looked at."""
    try:
        st = path.stat()  # follows symlinks: the mode that counts is the target's
    except OSError as exc:
        raise SecretFileInvalid(f"cannot read {shown}: {exc.strerror}") from exc
    if problem := mode_problem(st, shown, path):
        raise SecretFileInvalid(problem)


def read_secret_file(path: Path, shown: str) -> str:
    """The secret in `path` (UTF-8, surrounding whitespace stripped), or SecretFileInvalid.

    The mode is checked on the opened file, so the file judged is the file read."""
    try:
        with path.open("rb") as file:
            if problem := mode_problem(os.fstat(file.fileno()), shown, path):
                raise SecretFileInvalid(problem)
            raw = file.read(SECRET_MAX_BYTES + 1)
    except OSError as exc:
        raise SecretFileInvalid(f"cannot read {shown}: {exc.strerror}") from exc
    if len(raw) > SECRET_MAX_BYTES:
        raise SecretFileInvalid(f"{shown} is larger than 64 KiB")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretFileInvalid(f"{shown} is not UTF-8 text") from None
    if not value:
        raise SecretFileInvalid(f"{shown} is empty")
    return value


TLS_FILE_MAX_BYTES = 1 << 20  # a certificate chain or key; anything larger is not one


def read_tls_material(path: Path, error: type[Exception], *, refuse_empty: bool) -> bytes:
    """A PEM file's bytes, at most TLS_FILE_MAX_BYTES, or `error` with a message naming
    the path (never its content). Shared by the gateway's own TLS and the vault's."""
    try:
        with path.open("rb") as file:
            data = file.read(TLS_FILE_MAX_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > TLS_FILE_MAX_BYTES:
        raise error(f"{path} is larger than {TLS_FILE_MAX_BYTES} bytes")
    if refuse_empty and not data.strip():
        raise error(f"{path} is empty")
    return data


@dataclass(frozen=True, slots=True)
class Reloadable:
    """Material read from `paths`; `reload` re-reads it and swaps it in.

    `reload` returns True when new material was taken, False when the files hold what is
    in use already, and raises when the new files cannot be used: one of `safe_errors`
    (whose messages name files and problems, never content, so they are logged), or
    anything else (logged by its type only)."""

    source: str  # the config key that names the files: logs and the metric label
    paths: tuple[Path, ...]
    reload: Callable[[], bool]
    safe_errors: tuple[type[Exception], ...] = (SecretFileInvalid,)


Signature = tuple[int, int, int, int, int] | str
# Reported outcomes: `record(source, "reloaded" | "failed")`.
Record = Callable[[str, str], None]


def signature(path: Path) -> Signature:
    """What changes when a file is replaced or rewritten (its target's, through symlinks:
    a Kubernetes secret update swaps `..data`); an error's name when it cannot be seen."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"error {exc.errno}"
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class FileWatcher:
    """Reloads each `Reloadable` when its files change on disk or on `trigger()`."""

    def __init__(
        self, watched: Sequence[Reloadable], interval_s: float, record: Record
    ) -> None:
        self._watched = tuple(watched)
        self._interval_s = interval_s
        self._record = record
        self._seen = {w.source: self._signatures(w) for w in self._watched}
        self._wake = asyncio.Event()
        self._everything = False

    def trigger(self) -> None:
        """Reload everything at the next turn of the loop (SIGHUP); safe from a signal
        handler installed with `loop.add_signal_handler`."""
        self._everything = True
        self._wake.set()

    async def run(self) -> None:
        """Poll every `interval_s` (0: only on `trigger`) until cancelled."""
        if not self._watched:
            return
        # Once at the start: a file changed between the config's read and the first
        # signatures taken here would otherwise go unnoticed until its next change.
        self.check(everything=True)
        timeout = self._interval_s if self._interval_s > 0 else None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            everything, self._everything = self._everything, False
            self.check(everything=everything)

    def check(self, *, everything: bool = False) -> None:
        """Reload what changed since the last look (everything with `everything`)."""
        for watched in self._watched:
            now = self._signatures(watched)
            if not everything and now == self._seen[watched.source]:
                continue
            # Seen even when the reload fails: the same broken files are reported once,
            # and the next change to them (the fix) is tried again.
            self._seen[watched.source] = now
            self._reload(watched)

    def _reload(self, watched: Reloadable) -> None:
        try:
            changed = watched.reload()
        except Exception as exc:  # every failure keeps the current material
            shown = str(exc) if isinstance(exc, watched.safe_errors) else type(exc).__name__
            log.warning("%s: not reloaded, keeping the current one: %s", watched.source, shown)
            self._record(watched.source, "failed")
            return
        if changed:
            log.info("%s: reloaded", watched.source)
            self._record(watched.source, "reloaded")

    @staticmethod
    def _signatures(watched: Reloadable) -> tuple[Signature, ...]:
        return tuple(signature(path) for path in watched.paths)
