"""The `[state]` table: where the abuse limits keep their state (piigate.limits).

    [state]
    backend = "redis"                       # "memory" (default): each process on its own
    url = "rediss://redis.internal:6380/0"  # redis:// or rediss://; no credentials in it
    ca_file = "tls/redis-ca.pem"            # rediss only: trust bundle for the server
    username_env = "PIIGATE_REDIS_USER"     # optional (or username_file): an ACL user
    password_env = "PIIGATE_REDIS_PASSWORD" # optional (or password_file)
    subject_key_env = "PIIGATE_SUBJECT_KEY" # or subject_key_file: the same on every replica
    key_prefix = "piigate:"
    connect_timeout_ms = 500
    command_timeout_ms = 250                # and never beyond the request's own deadline
    pool_size = 32

The subject key keys the hashes that name users, callers and token ids in the store
(HMAC-SHA-256): every replica must hash a user to the same key, and nobody without the key
can tell whose entry is whose. With redis it is required; with memory it is optional (a
random key per process otherwise, as before).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from piigate.config.reader import Reader, milliseconds, non_empty, one_of

Backend = Literal["memory", "redis"]
# A key shorter than this is guessable; 32 characters of a random secret is 128+ bits.
SUBJECT_KEY_MIN_CHARS = 32
_KEYS = {
    "backend", "url", "ca_file", "username_env", "username_file", "password_env",
    "password_file", "subject_key_env", "subject_key_file", "key_prefix", "connect_timeout_ms",
    "command_timeout_ms", "pool_size",
}  # fmt: skip
_REDIS_ONLY = _KEYS - {"backend", "subject_key_env", "subject_key_file"}


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """How to reach the shared store (a single Redis or Valkey primary, not a cluster)."""

    url: str  # redis://host:port/db or rediss://...; never carries credentials
    ca_file: Path | None
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    key_prefix: str = "piigate:"
    connect_timeout_s: float = 0.5
    command_timeout_s: float = 0.25
    pool_size: int = 32


@dataclass(frozen=True, slots=True)
class StateConfig:
    backend: Backend = "memory"
    redis: RedisConfig | None = None  # set exactly when backend is "redis"
    subject_key: bytes | None = field(default=None, repr=False)


def read_state(r: Reader, data: Mapping[str, Any]) -> StateConfig:
    t = r.table(data, "state", "state")
    r.unknown_keys(t, _KEYS, "state")
    backend = r.get(t, "backend", "state", str, "memory")
    key = _subject_key(r, t)
    if backend == "memory":
        for name in sorted(_REDIS_ONLY & set(t)):
            r.problem(f"state.{name}", 'applies only with backend = "redis"')
        return StateConfig("memory", None, key)
    if message := one_of("memory", "redis")(backend):
        r.problem("state.backend", message)
        return StateConfig()
    if key is None:
        r.problem("state.subject_key_env", "backend redis needs subject_key_env or "
                  "subject_key_file (the same key on every replica)")
    return StateConfig("redis", _redis(r, t), key)


def _redis(r: Reader, t: Mapping[str, Any]) -> RedisConfig:
    url = r.get(t, "url", "state", str, None, redis_url) or ""
    ca_text = r.get(t, "ca_file", "state", str) if "ca_file" in t else None
    ca_file = r.file_path(ca_text, "state.ca_file")
    if ca_file is not None:
        r.existing_file(ca_file, "state.ca_file")
        if not url.startswith("rediss://"):
            r.problem("state.ca_file", "applies only to a rediss:// url")
    return RedisConfig(
        url=url,
        ca_file=ca_file,
        username=_optional_secret(r, t, "username"),
        password=_optional_secret(r, t, "password"),
        key_prefix=r.get(t, "key_prefix", "state", str, "piigate:", non_empty),
        connect_timeout_s=r.get(t, "connect_timeout_ms", "state", int, 500, milliseconds) / 1000,
        command_timeout_s=r.get(t, "command_timeout_ms", "state", int, 250, milliseconds) / 1000,
        pool_size=r.get(t, "pool_size", "state", int, 32,
                        lambda n: None if 1 <= n <= 1024 else "must be 1..1024"),
    )


def _optional_secret(r: Reader, t: Mapping[str, Any], stem: str) -> str | None:
    if f"{stem}_env" not in t and f"{stem}_file" not in t:
        return None
    return r.secret(t, stem, "state") or None


def _subject_key(r: Reader, t: Mapping[str, Any]) -> bytes | None:
    if "subject_key_env" not in t and "subject_key_file" not in t:
        return None
    value = r.secret(t, "subject_key", "state")
    if value and len(value) < SUBJECT_KEY_MIN_CHARS:
        which = "subject_key_env" if "subject_key_env" in t else "subject_key_file"
        r.problem(f"state.{which}", f"the key must be at least {SUBJECT_KEY_MIN_CHARS} "
                  "characters (e.g. `openssl rand -hex 32`)")
    return value.encode() if value else None


def redis_url(value: str) -> str | None:
    """redis:// or rediss://, a host, an optional numeric db; credentials never in the file."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "must be a redis:// or rediss:// URL"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return "must be a redis:// or rediss:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials: use username_env/password_env (or _file)"
    if port == 0:
        return "must name a port other than 0"
    db = parts.path.strip("/")
    if db and not (db.isdigit() and len(db) <= 5):
        return "the path may only be a database number (/0)"
    if parts.query or parts.fragment:
        return "must not have a query or fragment (the options are keys of [state])"
    return None
