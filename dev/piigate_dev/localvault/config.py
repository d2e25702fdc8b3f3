"""The local vault's configuration: one TOML file, read once, validated fully, frozen.

Every key is optional; with no file at all the vault runs in memory with one admin key,
`pvaultauth`, like Piiano's development image::

    data = "vault.db"                 # SQLite file; default ":memory:" (--data overrides)
    audit = "vault-audit.jsonl"       # audit log file; default stderr (--audit overrides)
    data_key_env = "PIIGATE_VAULT_DATA_KEY"   # or data_key_file = "vault.key"
    max_body_bytes = 1048576          # larger request bodies get 413

    [[collections]]                   # created at start (same shape as the control API)
    name = "users"
    type = "PERSONS"
    properties = [
      { name = "user_id", data_type_name = "STRING", is_unique = true },
      { name = "ssn", data_type_name = "SSN" },
      { name = "email", data_type_name = "EMAIL", is_nullable = true },
    ]

    [[keys]]
    name = "fhir-gateway"
    secret_env = "PIIGATE_VAULT_KEY_FHIR"     # or secret_sha256 = "<hex>" or secret_file = "..."
    [[keys.policies]]
    operations = ["detokenize"]               # tokenize, detokenize, read, write, or "*"
    collections = ["users"]
    properties = ["user_id", "ssn.mask"]      # "ssn.mask": the masked value only
    reasons = ["AppFunctionality"]

    [[keys]]
    name = "admin"
    secret_sha256 = "9f86d0...(64 hex digits)"
    [[keys.policies]]
    operations = ["*"]
    collections = ["*"]
    properties = ["*"]
    reasons = ["*"]

Secrets never appear in the file: a key names an environment variable, a file, or gives
the hex SHA-256 of its secret. The data key (32 bytes, base64) comes from `data_key_env`,
`data_key_file` or the environment variable PIIGATE_VAULT_DATA_KEY; without one, an
in-memory vault uses a random key and a file vault creates `<data>.key` (development
only). Relative paths are relative to the config file. Operations for token management
(rotate, delete) are `tokenize`; reading objects is `read`, adding them `write`, and
creating collections needs `write` with properties `["*"]`.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from piigate_dev.localvault.errors import StartupError
from piigate_dev.localvault.params import REASONS
from piigate_dev.localvault.policy import (
    DEV_ADMIN_SECRET,
    OPERATIONS,
    WILDCARD,
    ApiKey,
    Policy,
    admin_key,
    secret_digest,
)
from piigate_dev.localvault.schema import CollectionSpec, Problem, parse_collection
from piigate_dev.localvault.sealing import DATA_KEY_BYTES

DATA_KEY_ENV = "PIIGATE_VAULT_DATA_KEY"
MEMORY = ":memory:"
_TOP_KEYS = frozenset(
    {"data", "audit", "data_key_env", "data_key_file", "max_body_bytes", "collections", "keys"}
)
_KEY_KEYS = frozenset({"name", "secret_sha256", "secret_env", "secret_file", "policies"})
_POLICY_KEYS = frozenset({"operations", "collections", "properties", "reasons"})


class ConfigError(StartupError):
    """The config is unusable; lists every problem with its key path."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            "\n".join(f"config error at {path}: {message}" for path, message in problems)
        )
        self.problems = problems


@dataclass(frozen=True)
class VaultConfig:
    """Everything the vault needs at start-up. The data key is kept out of repr."""

    data_path: str = MEMORY
    data_key: bytes | None = field(default=None, repr=False)
    audit_path: str | None = None
    max_body_bytes: int = 1 << 20
    collections: tuple[CollectionSpec, ...] = ()
    keys: tuple[ApiKey, ...] = ()

    def effective_keys(self) -> tuple[ApiKey, ...]:
        """The configured keys, or the development admin key when none are."""
        return self.keys or (admin_key("admin", DEV_ADMIN_SECRET),)


def load_vault_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> VaultConfig:
    """Read and validate the config at `path` (None: defaults); raise ConfigError."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        base = Path(path).resolve().parent
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError([(str(path), f"cannot read: {exc.strerror}")]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([(str(path), f"not valid TOML: {exc}")]) from None
    return _Parser(base, env).parse(raw)


class _Parser:
    """Collects every problem, so one run reports all of them."""

    def __init__(self, base: Path, env: Mapping[str, str]) -> None:
        self.base = base
        self.env = env
        self.problems: list[Problem] = []

    def parse(self, raw: dict[str, Any]) -> VaultConfig:
        for key in sorted(raw.keys() - _TOP_KEYS):
            self.problems.append((key, "unknown key"))
        data = self._path(raw, "data") or MEMORY
        audit = self._path(raw, "audit")
        data_key = self._data_key(raw)
        max_body = raw.get("max_body_bytes", 1 << 20)
        if not isinstance(max_body, int) or isinstance(max_body, bool) or max_body < 1024:
            self.problems.append(("max_body_bytes", "must be an integer of at least 1024"))
        collections = self._collections(raw.get("collections", []))
        keys = self._keys(raw.get("keys", []))
        if self.problems:
            raise ConfigError(self.problems)
        return VaultConfig(data, data_key, audit, int(max_body), collections, keys)

    def _path(self, raw: Mapping[str, Any], key: str, where: str = "") -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problems.append((f"{where}{key}", "must be a non-empty string"))
            return None
        return value if value == MEMORY else str(self.base / value)

    def _data_key(self, raw: Mapping[str, Any]) -> bytes | None:
        if "data_key_env" in raw and "data_key_file" in raw:
            self.problems.append(("data_key_env", "give data_key_env or data_key_file, not both"))
            return None
        if "data_key_file" in raw:
            path = self._path(raw, "data_key_file")
            text = self._read(path, "data_key_file") if path else None
            return self._decode_key(text, "data_key_file") if text is not None else None
        env_name = raw.get("data_key_env", DATA_KEY_ENV)
        where = "data_key_env" if "data_key_env" in raw else f"{DATA_KEY_ENV} (environment)"
        if not isinstance(env_name, str) or not env_name:
            self.problems.append((where, "must name an environment variable"))
            return None
        if env_name not in self.env:
            if "data_key_env" in raw:
                self.problems.append((where, f"environment variable {env_name} is not set"))
            return None
        return self._decode_key(self.env[env_name], where)

    def _decode_key(self, text: str, where: str) -> bytes | None:
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != DATA_KEY_BYTES:
            self.problems.append((where, f"the data key must be {DATA_KEY_BYTES} bytes in base64"))
            return None
        return key

    def _read(self, path: str, where: str) -> str | None:
        try:
            return Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            self.problems.append((where, f"cannot read {path}: {exc.strerror}"))
            return None

    def _collections(self, raw: object) -> tuple[CollectionSpec, ...]:
        if not isinstance(raw, list):
            self.problems.append(("collections", "must be an array of tables"))
            return ()
        specs: list[CollectionSpec] = []
        for index, entry in enumerate(raw):
            spec, problems = parse_collection(entry, f"collections[{index}]")
            self.problems += problems
            if spec is not None and any(seen.name == spec.name for seen in specs):
                self.problems.append((f"collections[{index}].name", "duplicate collection name"))
            elif spec is not None:
                specs.append(spec)
        return tuple(specs)

    def _keys(self, raw: object) -> tuple[ApiKey, ...]:
        if not isinstance(raw, list):
            self.problems.append(("keys", "must be an array of tables"))
            return ()
        keys: list[ApiKey] = []
        for index, entry in enumerate(raw):
            key = self._key(entry, f"keys[{index}]")
            if key is not None and any(seen.name == key.name for seen in keys):
                self.problems.append((f"keys[{index}].name", "duplicate key name"))
            elif key is not None:
                keys.append(key)
        return tuple(keys)

    def _key(self, raw: object, where: str) -> ApiKey | None:
        if not isinstance(raw, dict):
            self.problems.append((where, "must be a table"))
            return None
        before = len(self.problems)
        for key in sorted(raw.keys() - _KEY_KEYS):
            self.problems.append((f"{where}.{key}", "unknown key"))
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            self.problems.append((f"{where}.name", "must be a non-empty string"))
        digest = self._secret(raw, where)
        policies = raw.get("policies")
        if not isinstance(policies, list) or not policies:
            self.problems.append((f"{where}.policies", "must be a non-empty array of tables"))
            policies = []
        parsed = [self._policy(p, f"{where}.policies[{i}]") for i, p in enumerate(policies)]
        if len(self.problems) > before or digest is None:
            return None
        return ApiKey(str(name), digest, tuple(p for p in parsed if p is not None))

    def _secret(self, raw: Mapping[str, Any], where: str) -> bytes | None:
        given = [k for k in ("secret_sha256", "secret_env", "secret_file") if k in raw]
        if len(given) != 1:
            self.problems.append(
                (where, "give exactly one of secret_sha256, secret_env, secret_file")
            )
            return None
        source = given[0]
        value = raw[source]
        if not isinstance(value, str) or not value:
            self.problems.append((f"{where}.{source}", "must be a non-empty string"))
            return None
        if source == "secret_sha256":
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                self.problems.append((f"{where}.secret_sha256", "must be 64 hex digits"))
                return None
            return digest
        if source == "secret_env":
            secret = self.env.get(value)
            if not secret:
                self.problems.append(
                    (f"{where}.secret_env", f"environment variable {value} is not set")
                )
                return None
        else:
            text = self._read(str(self.base / value), f"{where}.secret_file")
            secret = text.strip() if text is not None else None
            if not secret:
                if text is not None:
                    self.problems.append((f"{where}.secret_file", "the file is empty"))
                return None
        return secret_digest(secret)

    def _policy(self, raw: object, where: str) -> Policy | None:
        if not isinstance(raw, dict):
            self.problems.append((where, "must be a table"))
            return None
        for key in sorted(raw.keys() - _POLICY_KEYS):
            self.problems.append((f"{where}.{key}", "unknown key"))
        lists: dict[str, frozenset[str]] = {}
        allowed = {"operations": OPERATIONS, "reasons": REASONS}
        for key in sorted(_POLICY_KEYS):
            value = raw.get(key)
            if (
                not isinstance(value, list)
                or not value
                or not all(isinstance(item, str) and item for item in value)
            ):
                self.problems.append((f"{where}.{key}", "must be a non-empty list of strings"))
                continue
            bad = sorted(set(value) - allowed.get(key, set(value)) - {WILDCARD})
            if bad:
                self.problems.append((f"{where}.{key}", f"unknown {key[:-1]} {bad[0]!r}"))
            lists[key] = frozenset(value)
        if len(lists) != len(_POLICY_KEYS):
            return None
        return Policy(
            lists["operations"], lists["collections"], lists["properties"], lists["reasons"]
        )
