"""Walking parsed TOML while collecting every problem with its key path."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from piigate.transport.addresses import is_loopback_host

T = TypeVar("T")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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

    def unknown_keys(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(data) - allowed):
            self.problem(f"{path}.{key}" if path else key, "unknown key")

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
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
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
        file_path = (self.base_dir / file_name) if file_name else None
        try:
            value = file_path.read_text().strip() if file_path else ""
        except OSError as exc:
            self.problem(f"{path}.{file_key}", f"cannot read {file_name}: {exc.strerror}")
            return ""
        if not value:
            self.problem(f"{path}.{file_key}", f"{file_name} is empty")
        return value


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
    return None if value > 0 and math.isfinite(value) else "must be greater than 0"


def http_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if not sep or scheme not in ("http", "https") or not host:
        return "must be an http(s) URL"
    if scheme == "http" and not is_loopback_host(host):
        return "must use https unless the host is loopback"
    return None


def non_empty(value: str) -> str | None:
    return None if value else "must not be empty"
