"""Reading the whole file: the small sections, then issuers and profiles, then the
checks that span sections."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from piigate.config.issuers import read_issuers
from piigate.config.message_size import DEFAULT_MAX_REQUEST_BYTES, check_batch_fits
from piigate.config.model import (
    AuditConfig,
    CallerConfig,
    ConfigError,
    GatewayConfig,
    IssuerConfig,
    ServerConfig,
    TlsConfig,
    VaultConfig,
)
from piigate.config.network import VAULT_TLS_KEYS, read_proxies, read_vault_tls
from piigate.config.profiles import check_profile_issuers, read_profiles
from piigate.config.reader import Reader, http_url, milliseconds, non_empty, one_of, positive
from piigate.config.secrets import key_file_problem
from piigate.config.state import read_state
from piigate.config.telemetry import read_telemetry
from piigate.transport.addresses import ListenAddress, listeners_clash, parse_listen

_SERVER_KEYS = {
    "listen", "request_timeout_ms", "max_request_bytes", "max_metadata_bytes",
    "max_concurrent_rpcs", "handler_threads", "shutdown_grace_s", "tls_cert_file", "tls_key_file",
    "metrics_listen", "tls_client_ca_file", "tls_require_client_auth", "max_batch_size",
    "event_loop", "reload_interval_s",
}  # fmt: skip


def parse_config(
    data: Mapping[str, Any], environ: Mapping[str, str], base_dir: Path
) -> GatewayConfig:
    """Validate parsed TOML into a frozen GatewayConfig, or raise ConfigError listing
    every problem."""
    r = Reader(environ, base_dir)
    r.unknown_keys(data, {"server", "caller", "vault", "audit", "issuers", "profiles", "state",
                          "telemetry"},
                   "")
    server = _read_server(r, data)
    check_batch_fits(r, server.max_batch_size, server.max_request_bytes)
    issuers = read_issuers(r, data)
    caller = _read_caller(r, data, issuers)
    vault = _read_vault(r, data)
    audit = _read_audit(r, data)
    profiles = read_profiles(r, data)
    check_profile_issuers(r, profiles, issuers)
    mtls = server.tls is not None and server.tls.require_client_auth
    for profile in profiles:
        if profile.peers and not mtls:
            r.problem(f"profiles.{profile.name}.peers", "needs server.tls_client_ca_file "
                      "(client certificates are only verified with mutual TLS)")
    if server.metrics_listen is not None and listeners_clash(server.listen,
                                                                server.metrics_listen):
        r.problem("server.metrics_listen", f"the same port as server.listen "
                  f"({server.listen}): gRPC and metrics need a port each")
    state = read_state(r, data)
    telemetry = read_telemetry(r, data)
    proxies = read_proxies(r)
    if r.problems:
        raise ConfigError(r.problems)
    return GatewayConfig(server, caller, vault, audit, issuers, profiles, state,
                         proxies=proxies, telemetry=telemetry)


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the TOML file at `path` (relative paths in it are relative to it)."""
    shown = str(path).replace("\0", "\\0")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{shown}: cannot read: {exc.strerror or exc}"]) from exc
    except ValueError as exc:  # the path holds a NUL byte
        raise ConfigError([f"{shown}: cannot read: the path holds a NUL byte"]) from exc
    data = parse_toml(raw, shown)
    return parse_config(data, os.environ if environ is None else environ, path.parent)


def parse_toml(raw: bytes, source: str) -> dict[str, Any]:
    """The TOML document in `raw`, or ConfigError naming `source` (TOML is UTF-8 only)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        raise ConfigError([f"{source}: not valid TOML: not UTF-8 ({where})"]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from exc
    except ValueError as exc:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise ConfigError([f"{source}: not valid TOML: an integer has too many digits"]) from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError([f"{source}: not valid TOML: nested too deeply"]) from exc


def _listen(r: Reader, t: Mapping[str, Any], key: str, default: str | None) -> ListenAddress | None:
    text = r.get(t, key, "server", str, default)
    if text is None:
        return None
    try:
        return parse_listen(text)
    except ValueError as exc:
        r.problem(f"server.{key}", str(exc))
        return None


def _read_server(r: Reader, data: Mapping[str, Any]) -> ServerConfig:
    t = r.table(data, "server", "server")
    r.unknown_keys(t, _SERVER_KEYS, "server")
    return ServerConfig(
        listen=_listen(r, t, "listen", "127.0.0.1:50051") or ListenAddress("127.0.0.1", 0),
        tls=_read_tls(r, t),
        request_timeout_s=r.get(t, "request_timeout_ms", "server", int, 3000, milliseconds)
        / 1000,
        max_request_bytes=r.get(t, "max_request_bytes", "server", int,
                                DEFAULT_MAX_REQUEST_BYTES, positive),
        max_metadata_bytes=r.get(t, "max_metadata_bytes", "server", int, 8 * 1024, positive),
        max_concurrent_rpcs=r.get(t, "max_concurrent_rpcs", "server", int, 1024, positive),
        shutdown_grace_s=r.get(t, "shutdown_grace_s", "server", float, 10.0, positive),
        metrics_listen=_listen(r, t, "metrics_listen", None) if "metrics_listen" in t else None,
        max_batch_size=r.get(t, "max_batch_size", "server", int, 100, positive),
        handler_threads=r.get(t, "handler_threads", "server", int, 256,
                              lambda v: None if 1 <= v <= 1024 else "must be 1..1024"),
        reload_interval_s=r.get(t, "reload_interval_s", "server", float, 5.0,
                                lambda s: None if 0 <= s <= 3600 else "must be 0..3600"),
        event_loop=r.get(t, "event_loop", "server", str, "uvloop",  # type: ignore[arg-type]
                         one_of("uvloop", "asyncio")),
    )


def _read_tls(r: Reader, t: Mapping[str, Any]) -> TlsConfig | None:
    tls_keys = ("tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_require_client_auth")
    if not any(k in t for k in tls_keys):
        return None
    texts = {name: r.get(t, name, "server", str, default)
             for name, default in (("tls_cert_file", None), ("tls_key_file", None),
                                   ("tls_client_ca_file", ""))}
    files = {name: r.file_path(text, f"server.{name}") if text else None
             for name, text in texts.items()}
    require = r.get(t, "tls_require_client_auth", "server", bool,
                    bool(texts["tls_client_ca_file"]))
    if require and not texts["tls_client_ca_file"]:
        r.problem("server.tls_require_client_auth", "needs tls_client_ca_file to verify against")
    cert, key, ca = files["tls_cert_file"], files["tls_key_file"], files["tls_client_ca_file"]
    if cert is None or key is None:
        return None
    for name, file in files.items():
        if file is not None:
            r.existing_file(file, f"server.{name}")
    if (problem := key_file_problem(key, str(texts["tls_key_file"]))) is not None:
        r.problem("server.tls_key_file", problem)
    return TlsConfig(cert, key, ca, require)


def _read_caller(
    r: Reader, data: Mapping[str, Any], issuers: tuple[IssuerConfig, ...]
) -> CallerConfig:
    c = r.table(data, "caller", "caller")
    r.unknown_keys(c, {"audience", "issuers", "required_scopes"}, "caller")
    caller = CallerConfig(
        audience=r.get(c, "audience", "caller", str, "piigate", non_empty),
        issuers=r.strings(c, "issuers", "caller",
                          tuple(i.name for i in issuers if i.introspection is None)),
        required_scopes=frozenset(r.strings(c, "required_scopes", "caller", ())),
    )
    by_name = {i.name: i for i in issuers}
    for name in caller.issuers:
        issuer = by_name.get(name)
        if issuer is None:
            r.problem("caller.issuers", f"{name!r} is not the name of a configured issuer")
        elif issuer.introspection is not None:
            r.problem("caller.issuers", f"{name!r} has token_format = \"opaque\": caller "
                      "credentials are JWTs (opaque tokens are introspected for subjects only)")
        elif not issuer.caller_audience_in_token and not caller.required_scopes:
            # Such tokens (Cognito client credentials) name no audience, so nothing would
            # tie a caller credential to piigate; a required scope does.
            r.problem("caller.required_scopes", f"issuer {name!r} ({issuer.kind}) puts no "
                      "audience in client-credentials tokens: require a scope that only "
                      "piigate's callers are granted")
    return caller


def _read_vault(r: Reader, data: Mapping[str, Any]) -> VaultConfig:
    v = r.table(data, "vault", "vault")
    r.unknown_keys(v, {"url", "timeout_ms", "max_connections", "max_response_bytes",
                       "coalesce", "coalesce_wait_us", "coalesce_max_batch",
                       "coalesce_max_inflight", *VAULT_TLS_KEYS}, "vault")
    return VaultConfig(
        url=(r.get(v, "url", "vault", str, None, http_url) or "").rstrip("/"),
        timeout_s=r.get(v, "timeout_ms", "vault", int, 2000, milliseconds) / 1000,
        max_connections=r.get(v, "max_connections", "vault", int, 64, positive),
        max_response_bytes=r.get(v, "max_response_bytes", "vault", int, 1024 * 1024, positive),
        coalesce=r.get(v, "coalesce", "vault", bool, True),
        coalesce_wait_s=r.get(v, "coalesce_wait_us", "vault", int, 2000,
                              lambda us: None if 0 < us <= 100_000 else "must be 1..100000")
        / 1e6,
        coalesce_max_batch=r.get(v, "coalesce_max_batch", "vault", int, 64,
                                 lambda n: None if 1 <= n <= 1000 else "must be 1..1000"),
        coalesce_max_inflight=r.get(v, "coalesce_max_inflight", "vault", int, 2,
                                    lambda n: None if 1 <= n <= 64 else "must be 1..64"),
        tls=read_vault_tls(r, v),
    )


def _read_audit(r: Reader, data: Mapping[str, Any]) -> AuditConfig:
    a = r.table(data, "audit", "audit")
    r.unknown_keys(a, {"sink", "path", "fsync"}, "audit")
    sink = r.get(a, "sink", "audit", str, "stdout")
    path: Path | None = None
    if sink == "file":
        path = r.file_path(r.get(a, "path", "audit", str), "audit.path")
    elif message := one_of("stdout", "file")(sink):
        r.problem("audit.sink", message)
    fsync = r.get(a, "fsync", "audit", bool, False)
    return AuditConfig(sink=sink, path=path, fsync=fsync)  # type: ignore[arg-type]
