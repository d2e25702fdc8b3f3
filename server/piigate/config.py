"""Gateway configuration: one TOML file, read once, validated completely, frozen.

Every mistake is reported with its key path (`profiles.support.fields.ssn: ...`), all of
them at once, so an operator fixes a file in one pass. Secrets never live in the file:
a profile names the environment variable or file that holds its vault API key, and this
module is the only place that reads either (style lesson 4).

A complete annotated example is in README.md ("Configuration").
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from piigate.addresses import ListenAddress, is_loopback_host, parse_listen
from piigate.piiano import REASONS

Disposition = Literal["raw", "mask", "redact"]
TypRule = Literal["at+jwt", "any", "keycloak", "cognito"]

PIIANO_REASONS = REASONS
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_PII_TOKEN_CLAIM = "https://example.com/pii_token"  # noqa: S105 - a claim name
# Property names as Piiano allows them; also what callers may name in `fields`.
PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every `key.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path  # PEM certificate chain
    key_file: Path  # PEM private key


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: ListenAddress
    tls: TlsConfig | None
    request_timeout_s: float  # budget when the caller sets no deadline, and the cap when it does
    max_request_bytes: int
    max_metadata_bytes: int
    max_concurrent_rpcs: int
    shutdown_grace_s: float


@dataclass(frozen=True, slots=True)
class CallerConfig:
    audience: str  # caller credentials must be issued for piigate itself
    issuers: tuple[str, ...]  # names of issuers trusted to mint caller credentials


@dataclass(frozen=True, slots=True)
class VaultConfig:
    url: str
    timeout_s: float
    max_connections: int
    max_response_bytes: int


@dataclass(frozen=True, slots=True)
class AuditConfig:
    sink: Literal["stdout", "file"]
    path: Path | None
    fsync: bool  # fsync every event before PII is returned (durable, slower)


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    name: str
    issuer: str
    jwks_uri: str
    algorithms: tuple[str, ...]
    typ: TypRule
    leeway_s: int
    max_lifetime_s: int | None
    max_age_s: int | None
    pii_token_claim: str
    client_id_claims: tuple[str, ...]
    scope_claims: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Profile:
    """A service profile: who may call, on which users' tokens, for what, and how each
    vault property is disclosed. Properties not listed are never returned."""

    name: str
    callers: frozenset[str]
    audiences: frozenset[str]
    required_scopes: frozenset[str]
    reasons: frozenset[str]
    default_reason: str
    collection: str
    fields: Mapping[str, Disposition]  # in the order the profile lists them
    vault_api_key: str  # resolved from the environment variable or file the config names

    def __repr__(self) -> str:  # never print the key
        return f"Profile(name={self.name!r}, collection={self.collection!r})"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig
    caller: CallerConfig
    vault: VaultConfig
    audit: AuditConfig
    issuers: tuple[IssuerConfig, ...]
    profiles: tuple[Profile, ...]


T = TypeVar("T")


class _Reader:
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
            self.problem(full, f"must be {_kind_name(kind)}, got {type(value).__name__}")
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


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }.get(kind, kind.__name__)


def _positive(value: float) -> str | None:
    return None if value > 0 and math.isfinite(value) else "must be greater than 0"


def _http_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    host = rest.split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    if not sep or scheme not in ("http", "https") or not host:
        return "must be an http(s) URL"
    if scheme == "http" and not is_loopback_host(host):
        return "must use https unless the host is loopback"
    return None


def _read_server(r: _Reader, data: Mapping[str, Any]) -> ServerConfig:
    t = r.table(data, "server", "server")
    r.unknown_keys(
        t,
        {
            "listen",
            "request_timeout_ms",
            "max_request_bytes",
            "max_metadata_bytes",
            "max_concurrent_rpcs",
            "shutdown_grace_s",
            "tls_cert_file",
            "tls_key_file",
        },
        "server",
    )
    listen_text = r.get(t, "listen", "server", str, "127.0.0.1:50051")
    try:
        listen = parse_listen(listen_text)
    except ValueError as exc:
        r.problem("server.listen", str(exc))
        listen = ListenAddress("127.0.0.1", 0)
    tls: TlsConfig | None = None
    if "tls_cert_file" in t or "tls_key_file" in t:
        cert = r.get(t, "tls_cert_file", "server", str)
        key = r.get(t, "tls_key_file", "server", str)
        if cert and key:
            tls = TlsConfig(r.base_dir / cert, r.base_dir / key)
            for name, file in (("tls_cert_file", tls.cert_file), ("tls_key_file", tls.key_file)):
                if not file.is_file():
                    r.problem(f"server.{name}", f"{file} does not exist")
    return ServerConfig(
        listen=listen,
        tls=tls,
        request_timeout_s=r.get(t, "request_timeout_ms", "server", int, 3000, _positive) / 1000,
        max_request_bytes=r.get(t, "max_request_bytes", "server", int, 64 * 1024, _positive),
        max_metadata_bytes=r.get(t, "max_metadata_bytes", "server", int, 8 * 1024, _positive),
        max_concurrent_rpcs=r.get(t, "max_concurrent_rpcs", "server", int, 1024, _positive),
        shutdown_grace_s=r.get(t, "shutdown_grace_s", "server", float, 10.0, _positive),
    )


def _read_issuers(r: _Reader, data: Mapping[str, Any]) -> tuple[IssuerConfig, ...]:
    raw = data.get("issuers")
    if not isinstance(raw, list) or not raw:
        r.problem("issuers", "at least one [[issuers]] table is required")
        return ()
    issuers: list[IssuerConfig] = []
    for i, t in enumerate(raw):
        p = f"issuers[{i}]"
        if not isinstance(t, dict):
            r.problem(p, "must be a table")
            continue
        r.unknown_keys(
            t,
            {
                "name",
                "issuer",
                "jwks_uri",
                "algorithms",
                "typ",
                "leeway_s",
                "max_lifetime_s",
                "max_age_s",
                "pii_token_claim",
                "client_id_claims",
                "scope_claims",
            },
            p,
        )
        algorithms = r.strings(t, "algorithms", p, ("RS256",))
        for alg in algorithms:
            if alg not in ASYMMETRIC_ALGORITHMS:
                r.problem(
                    f"{p}.algorithms",
                    f"{alg!r} is not allowed; use one of "
                    f"{', '.join(ASYMMETRIC_ALGORITHMS)} (no 'none', no HMAC)",
                )
        typ = r.get(t, "typ", p, str, "at+jwt")
        if typ not in ("at+jwt", "any", "keycloak", "cognito"):
            r.problem(f"{p}.typ", "must be one of at+jwt, any, keycloak, cognito")
        leeway = r.get(t, "leeway_s", p, int, 30)
        if not 0 <= leeway <= 60:
            r.problem(f"{p}.leeway_s", "must be between 0 and 60 seconds")
        max_lifetime = r.get(t, "max_lifetime_s", p, int, 86400, _positive)
        max_age = t.get("max_age_s")
        if max_age is not None:
            max_age = r.get(t, "max_age_s", p, int, None, _positive)
        issuers.append(
            IssuerConfig(
                name=r.get(t, "name", p, str),
                issuer=r.get(
                    t, "issuer", p, str, None, lambda v: None if v else "must not be empty"
                ),
                jwks_uri=r.get(t, "jwks_uri", p, str, None, _http_url),
                algorithms=algorithms,
                typ=typ,  # type: ignore[arg-type]  # checked above
                leeway_s=leeway,
                max_lifetime_s=max_lifetime,
                max_age_s=max_age,
                pii_token_claim=r.get(t, "pii_token_claim", p, str, DEFAULT_PII_TOKEN_CLAIM),
                client_id_claims=r.strings(t, "client_id_claims", p, ("azp", "client_id", "cid")),
                scope_claims=r.strings(t, "scope_claims", p, ("scope", "scp")),
            )
        )
    names = [i.name for i in issuers]
    for name in sorted({n for n in names if names.count(n) > 1}):
        r.problem("issuers", f"issuer name {name!r} is used twice")
    strings = [i.issuer for i in issuers]
    for iss in sorted({s for s in strings if strings.count(s) > 1}):
        r.problem("issuers", f"issuer {iss!r} is configured twice")
    return tuple(issuers)


def _read_profiles(r: _Reader, data: Mapping[str, Any]) -> tuple[Profile, ...]:
    raw = r.table(data, "profiles", "profiles")
    profiles: list[Profile] = []
    claimed_callers: dict[str, str] = {}
    for name, t in raw.items():
        p = f"profiles.{name}"
        if not isinstance(t, dict):
            r.problem(p, "must be a table")
            continue
        r.unknown_keys(
            t,
            {
                "callers",
                "audiences",
                "required_scopes",
                "reasons",
                "default_reason",
                "collection",
                "fields",
                "vault_api_key_env",
                "vault_api_key_file",
            },
            p,
        )
        callers = r.strings(t, "callers", p)
        for caller in callers:
            if caller in claimed_callers:
                r.problem(
                    f"{p}.callers",
                    f"caller {caller!r} already uses profile "
                    f"{claimed_callers[caller]!r}; a caller has exactly one profile",
                )
            claimed_callers[caller] = name
        audiences = r.strings(t, "audiences", p)
        if not audiences and "audiences" in t:
            r.problem(f"{p}.audiences", "must list at least one audience")
        reasons = r.strings(t, "reasons", p, ("AppFunctionality",))
        for reason in reasons:
            if reason not in PIIANO_REASONS:
                r.problem(
                    f"{p}.reasons",
                    f"{reason!r} is not a vault reason; use one of {', '.join(PIIANO_REASONS)}",
                )
        default_reason = r.get(t, "default_reason", p, str, reasons[0] if reasons else "")
        if reasons and default_reason not in reasons:
            r.problem(f"{p}.default_reason", "must be one of the profile's reasons")
        if default_reason == "Other":
            r.problem(f"{p}.default_reason", "cannot be Other: Other needs a per-call adhoc_reason")
        fields_table = r.table(t, "fields", p)
        fields: dict[str, Disposition] = {}
        for field, disposition in fields_table.items():
            if not PROPERTY_NAME.match(field):
                r.problem(f"{p}.fields.{field}", "is not a valid vault property name")
            if disposition not in ("raw", "mask", "redact"):
                r.problem(f"{p}.fields.{field}", "must be one of raw, mask, redact")
                continue
            fields[field] = disposition
        if not fields_table:
            r.problem(f"{p}.fields", "must list at least one property")
        profiles.append(
            Profile(
                name=name,
                callers=frozenset(callers),
                audiences=frozenset(audiences),
                required_scopes=frozenset(r.strings(t, "required_scopes", p, ())),
                reasons=frozenset(reasons),
                default_reason=default_reason,
                collection=r.get(t, "collection", p, str, None, _non_empty),
                fields=MappingProxyType(fields),
                vault_api_key=r.secret(t, "vault_api_key", p),
            )
        )
    if not profiles:
        r.problem("profiles", "no profiles: every caller would be denied (define at least one)")
    return tuple(profiles)


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def parse_config(
    data: Mapping[str, Any], environ: Mapping[str, str], base_dir: Path
) -> GatewayConfig:
    """Validate parsed TOML into a frozen GatewayConfig, or raise ConfigError listing
    every problem."""
    r = _Reader(environ, base_dir)
    r.unknown_keys(data, {"server", "caller", "vault", "audit", "issuers", "profiles"}, "")
    server = _read_server(r, data)

    c = r.table(data, "caller", "caller")
    r.unknown_keys(c, {"audience", "issuers"}, "caller")
    issuers = _read_issuers(r, data)
    caller = CallerConfig(
        audience=r.get(c, "audience", "caller", str, "piigate", _non_empty),
        issuers=r.strings(c, "issuers", "caller", tuple(i.name for i in issuers)),
    )
    for name in caller.issuers:
        if name not in {i.name for i in issuers}:
            r.problem("caller.issuers", f"{name!r} is not the name of a configured issuer")

    v = r.table(data, "vault", "vault")
    r.unknown_keys(v, {"url", "timeout_ms", "max_connections", "max_response_bytes"}, "vault")
    vault = VaultConfig(
        url=(r.get(v, "url", "vault", str, None, _http_url) or "").rstrip("/"),
        timeout_s=r.get(v, "timeout_ms", "vault", int, 2000, _positive) / 1000,
        max_connections=r.get(v, "max_connections", "vault", int, 64, _positive),
        max_response_bytes=r.get(v, "max_response_bytes", "vault", int, 1024 * 1024, _positive),
    )

    a = r.table(data, "audit", "audit")
    r.unknown_keys(a, {"sink", "path", "fsync"}, "audit")
    sink = r.get(a, "sink", "audit", str, "stdout")
    path: Path | None = None
    if sink == "file":
        path_text = r.get(a, "path", "audit", str)
        path = base_dir / path_text if path_text else None
    elif sink != "stdout":
        r.problem("audit.sink", "must be stdout or file")
    audit = AuditConfig(sink=sink, path=path, fsync=r.get(a, "fsync", "audit", bool, False))  # type: ignore[arg-type]

    profiles = _read_profiles(r, data)
    if r.problems:
        raise ConfigError(r.problems)
    return GatewayConfig(server, caller, vault, audit, issuers, profiles)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the TOML file at `path` (relative paths in it are relative to it)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    return parse_config(data, os.environ if environ is None else environ, path.parent)
