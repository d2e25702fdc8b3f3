"""Walking parsed TOML while collecting every problem with its key path.

Nothing a config file holds may raise here: an absurd value (an integer of hundreds of
digits, a path with a NUL byte or a 300-byte file name, a secret file that is not text)
is one more problem with its key path, like any other mistake.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yarl

from piigate.config.secrets import SecretFileInvalid, read_secret_file
from piigate.transport.addresses import is_loopback_host

T = TypeVar("T")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# TOML integers are 64-bit (TOML 1.0 "Integer"); tomllib reads any size, and a larger one
# would overflow a float conversion or a timer later instead of being reported here.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Linux's NAME_MAX and PATH_MAX: a longer name cannot be opened, so say so up front.
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


class Reader:
    """Walks the parsed TOML, collecting problems with their key paths instead of
    stopping at the first one."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.environ = environ
        self.base_dir = base_dir

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(path, "must be a table")
            return {}
        return value

    def unknown_keys(self, data: Mapping[str, Any], allowed: Collection[str], path: str) -> None:
        """Report every key of `data` outside `allowed`, with the closest allowed key."""
        for key in sorted(set(data) - set(allowed)):
            full = f"{path}.{key}" if path else key
            self.problem(full, f"unknown key{did_you_mean(key, allowed)}")

    def get(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        kind: type[T],
        default: T | None = None,
        check: Callable[[T], str | None] | None = None,
    ) -> T:
        full = f"{path}.{key}" if path else key
        if key not in data:
            if default is None:
                self.problem(full, "is required")
            return default  # type: ignore[return-value]  # callers only use it if no problems
        value = data[key]
        number = isinstance(value, int) and not isinstance(value, bool)
        if kind in (int, float) and number and not INT_MIN <= value <= INT_MAX:
            self.problem(full, "is out of range (TOML integers are 64-bit)")
            return default  # type: ignore[return-value]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and number:
            value, ok = float(value), True
        if not ok:
            self.problem(full, f"must be {kind_name(kind)}, got {type(value).__name__}")
            return default  # type: ignore[return-value]
        if check is not None and (message := check(value)):
            self.problem(full, message)
        return value  # type: ignore[no-any-return]

    def strings(
        self, data: Mapping[str, Any], key: str, path: str, default: tuple[str, ...] | None = None
    ) -> tuple[str, ...]:
        values = self.get(data, key, path, list, list(default) if default is not None else None)
        if values is None:
            return ()
        if not all(isinstance(v, str) and v for v in values):
            self.problem(f"{path}.{key}", "must be a list of non-empty strings")
            return ()
        return tuple(values)

    def secret(self, data: Mapping[str, Any], stem: str, path: str) -> str:
        """Resolve `<stem>_env` or `<stem>_file`; exactly one must be given."""
        env_key, file_key = f"{stem}_env", f"{stem}_file"
        if (env_key in data) == (file_key in data):
            self.problem(f"{path}.{env_key}", f"give exactly one of {env_key} or {file_key}")
            return ""
        if env_key in data:
            name = self.get(data, env_key, path, str)
            if not name or not ENV_NAME.match(name):
                self.problem(f"{path}.{env_key}", "must be an environment variable name")
                return ""
            value = self.environ.get(name, "").strip()
            if not value:
                self.problem(f"{path}.{env_key}", f"environment variable {name} is not set")
            return value
        file_name = self.get(data, file_key, path, str)
        file_path = self.file_path(file_name, f"{path}.{file_key}")
        if file_path is None:
            return ""
        try:  # refused unless private (piigate.config.secrets)
            return read_secret_file(file_path, file_name)
        except SecretFileInvalid as exc:
            self.problem(f"{path}.{file_key}", str(exc))
            return ""

    def secret_file(self, data: Mapping[str, Any], stem: str) -> Path | None:
        """The file `<stem>_file` names, for reloading it later (None when the secret
        comes from the environment); only meaningful once `secret` found no problem."""
        name = data.get(f"{stem}_file")
        return self.base_dir / name if isinstance(name, str) and name else None

    def file_path(self, text: str | None, full: str) -> Path | None:
        """`text` (a path from the file, relative to its directory) as a Path, or None
        with a problem at `full` when no file could ever have that name (None for a
        missing key, already reported as required)."""
        if text is None:
            return None
        if not text:
            self.problem(full, "must not be empty")
            return None
        if "\0" in text:
            self.problem(full, "must not contain a NUL byte")
            return None
        try:
            encoded = str(self.base_dir / text).encode("utf-8")
        except UnicodeEncodeError:
            self.problem(full, "must be valid Unicode")
            return None
        if any(len(part) > NAME_MAX_BYTES for part in encoded.split(b"/")):
            self.problem(full, f"has a file name longer than {NAME_MAX_BYTES} bytes")
            return None
        if len(encoded) >= PATH_MAX_BYTES:
            self.problem(full, f"is longer than {PATH_MAX_BYTES - 1} bytes")
            return None
        return self.base_dir / text

    def existing_file(self, file: Path, full: str) -> None:
        """Report at `full` unless `file` is a regular file that can be looked at."""
        try:
            found = file.is_file()
        except OSError as exc:  # e.g. a directory on the way that cannot be searched
            self.problem(full, f"{file}: {exc.strerror}")
            return
        if not found:
            self.problem(full, f"{file} does not exist")


def kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)


def positive(value: float) -> str | None:
    finite = isinstance(value, int) or math.isfinite(value)  # isfinite(10**400) overflows
    return None if value > 0 and finite else "must be greater than 0"


TIMEOUT_MAX_MS = 3_600_000


def milliseconds(value: int) -> str | None:
    """A timeout in milliseconds: positive, and at most an hour (a timer of years is a
    typo, and past about 292 years it overflows the event loop's clock)."""
    if value <= 0:
        return "must be greater than 0"
    return None if value <= TIMEOUT_MAX_MS else f"must be at most {TIMEOUT_MAX_MS} (an hour)"


def http_url(value: str) -> str | None:
    """Check a URL piigate will fetch, read as its HTTP clients read it (yarl), so a URL
    the file passes is one the vault client and the JWKS fetcher accept."""
    try:
        url = yarl.URL(value)
    except (ValueError, IndexError):  # yarl 1.25: IndexError for `https://[::1]:x@/`
        return "must be an http(s) URL"
    if url.scheme not in ("http", "https") or not url.is_absolute() or not url.host:
        return "must be an http(s) URL"
    if url.user is not None or url.password is not None:
        return "must not carry credentials"  # they would end up in logs and traces
    if url.scheme == "http" and not is_loopback_host(url.host):
        return "must use https unless the host is loopback"
    return None


def did_you_mean(typed: object, allowed: Collection[str]) -> str:
    """`; did you mean 'x'?` naming the allowed word closest to `typed`, or "" when none is
    close. Only a word from `allowed` is ever quoted, never what the file says (a value
    may be something pasted by mistake, even a secret)."""
    if not isinstance(typed, str):
        return ""
    # difflib's default cutoff (0.6) finds `auth0` for `auth0x` and `max_batch_size` for
    # `max_batch_sise`, and nothing for an unrelated word. Compared case-insensitively, so
    # `File` finds `file`; the suggestion keeps the allowed word's own spelling.
    by_folded = {word.casefold(): word for word in sorted(allowed)}
    close = difflib.get_close_matches(typed.casefold(), list(by_folded), n=1)
    return f"; did you mean {by_folded[close[0]]!r}?" if close else ""


def one_of(*allowed: str) -> Callable[[str], str | None]:
    """A `check` for `Reader.get`: the value must be one of `allowed` (an enum-like key);
    the problem names the choices and the closest one."""

    def check(value: str) -> str | None:
        if value in allowed:
            return None
        choices = " or ".join(allowed) if len(allowed) == 2 else f"one of {', '.join(allowed)}"
        return f"must be {choices}{did_you_mean(value, allowed)}"

    return check


def non_empty(value: str) -> str | None:
    return None if value else "must not be empty"
