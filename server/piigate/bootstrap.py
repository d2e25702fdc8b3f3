"""The composition root: the one place that builds piigate's object graph from config.

Tests hand it a fake clock (and, where they watch it, an audit sink); every other part is
the real thing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
import yarl
from grpc_health.v1 import health, health_pb2_grpc

from piigate.audit.event import AuditSink
from piigate.audit.recorder import AuditRecorder
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.config import GatewayConfig, IssuerConfig
from piigate.config.message_size import MAX_RESPONSE_BYTES
from piigate.config.network import VaultTlsInvalid
from piigate.config.secrets import FileWatcher, Reloadable, read_secret_file
from piigate.identity.caller import BearerCallerAuthenticator
from piigate.limits.abuse import AbuseGuard
from piigate.pipeline import DetokenizationPipeline, Limits, SubjectDecider
from piigate.policy.profiles import ProfileIndex
from piigate.telemetry.endpoint import metrics_app, publish_from_worker
from piigate.telemetry.metrics import GatewayMetrics, vault_outcome
from piigate.telemetry.tracing import TracedVault, Tracing, subject_verifier, tracing_from_config
from piigate.tokens.discovery import DiscoveredJwks, discover_endpoint
from piigate.tokens.introspection import (
    HttpIntrospectionPost,
    IntrospectionSettings,
    Introspector,
)
from piigate.tokens.jwks import JwksCache, JwksCacheSettings
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate.tokens.verifier import TokenVerifier
from piigate.transport.addresses import AddressInUse, ListenAddress
from piigate.transport.bridge import BridgedService
from piigate.transport.http import start_http_app
from piigate.transport.proxies import DIRECT, Proxies
from piigate.transport.readiness import AuditHealth, IssuerReadiness
from piigate.transport.reflection import enable_reflection
from piigate.transport.service import DetokenizationService
from piigate.transport.tls import ReloadingServerCredentials, TlsFiles, TlsMaterialInvalid
from piigate.vault.client import VaultClient
from piigate.vault.coalescing import CoalescingVault, MeasuredVault, Vault
from piigate.vault.tls import VaultTls
from piigate_client.client_auth import ClientAuthentication, ClientSecretBasic, PrivateKeyJwt
from piigate_client.v1 import detokenization_pb2, detokenization_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = detokenization_pb2.DESCRIPTOR.services_by_name["DetokenizationService"].full_name
_TYP_RULES = {
    "at+jwt": TypRule.AT_JWT,
    "any": TypRule.ANY,
    "keycloak": TypRule.KEYCLOAK,
    "cognito": TypRule.COGNITO,
}
KeySource = JwksCache | DiscoveredJwks
IssuerSource = KeySource | Introspector  # an opaque issuer's "source" is its introspector


def issuer_policy(issuer: IssuerConfig) -> IssuerPolicy:
    """The pure verification policy for one configured issuer."""
    return IssuerPolicy(
        name=issuer.name,
        issuer=issuer.issuer,
        algorithms=issuer.algorithms,
        audiences=(),  # the caller stage and the profile check audiences
        leeway_s=issuer.leeway_s,
        max_lifetime_s=issuer.max_lifetime_s,
        max_age_s=issuer.max_age_s,
        typ_rule=_TYP_RULES[issuer.typ],
    )


def server_options(config: GatewayConfig, share_port: bool = False) -> list[tuple[str, int]]:
    """Limits set deliberately rather than left at grpc's defaults."""
    s = config.server
    return [
        ("grpc.max_receive_message_length", s.max_request_bytes),
        ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),  # what clients take by default
        ("grpc.max_metadata_size", s.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", s.max_metadata_bytes),
        # Off, so no other process can bind our port and take a share of the connections;
        # on only for `piigate serve --workers N`, whose workers share it on purpose.
        ("grpc.so_reuseport", int(share_port)),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_idle_ms", 15 * 60_000),
    ]


def key_source(
    issuer: IssuerConfig, session: aiohttp.ClientSession, clock: Callable[[], float],
    proxies: Proxies = DIRECT, metrics: GatewayMetrics | None = None,
) -> KeySource:
    """The issuer's JWKS cache, behind discovery when no `jwks_uri` is configured."""
    j = issuer.jwks
    settings = JwksCacheSettings(
        default_ttl_s=j.default_ttl_s,
        min_ttl_s=j.min_ttl_s,
        max_ttl_s=j.max_ttl_s,
        stale_if_error_s=j.stale_if_error_s,
        unknown_kid_cooldown_s=j.unknown_kid_cooldown_s,
        total_timeout_s=j.timeout_s,
        connect_timeout_s=min(2.0, j.timeout_s),
        read_timeout_s=j.timeout_s,
        allowed_algorithms=issuer.algorithms,
        proxies=proxies,
    )
    on_fetch = metrics.jwks_fetch_observer(issuer.name) if metrics is not None else None
    if issuer.jwks_uri is None:
        return DiscoveredJwks(
            issuer.issuer, session, clock, settings, issuer_name=issuer.name, on_fetch=on_fetch,
            on_discovery=metrics.discovery_observer(issuer.name) if metrics is not None else None,
        )
    return JwksCache(issuer.jwks_uri, session, clock, settings, issuer_name=issuer.name,
                     on_fetch=on_fetch)


def introspector(
    issuer: IssuerConfig, session: aiohttp.ClientSession, clock: Callable[[], float],
    proxies: Proxies = DIRECT,
) -> Introspector:
    """An opaque issuer's introspector, with piigate's own client credentials."""
    i = issuer.introspection
    assert i is not None  # set exactly for token_format = "opaque"
    authentication: ClientAuthentication = (
        PrivateKeyJwt(i.private_key, algorithm=i.algorithm, key_id=i.key_id, clock=clock)
        if i.auth_method == "private_key_jwt" else ClientSecretBasic(i.client_secret)
    )
    settings = IntrospectionSettings(
        client_id=i.client_id, authentication=authentication, endpoint=i.endpoint,
        assertion_audience=i.assertion_audience, cache_s=i.cache_s, timeout_s=i.timeout_s,
        token_prefix=i.token_prefix,
    )
    fetch = JwksCacheSettings(total_timeout_s=i.timeout_s, read_timeout_s=i.timeout_s,
                              connect_timeout_s=min(2.0, i.timeout_s), proxies=proxies)

    async def discover() -> str:
        return await discover_endpoint(session, issuer.issuer, fetch, "introspection_endpoint")

    return Introspector(issuer_policy(issuer), settings, HttpIntrospectionPost(session, proxies),
                        clock, discover=discover)


def issuer_source(
    issuer: IssuerConfig, session: aiohttp.ClientSession, clock: Callable[[], float],
    proxies: Proxies = DIRECT, metrics: GatewayMetrics | None = None,
) -> IssuerSource:
    """What verifies the issuer's tokens: its keys (JWT) or its introspector (opaque)."""
    if issuer.introspection is not None:  # token_format = "opaque"
        return introspector(issuer, session, clock, proxies)
    return key_source(issuer, session, clock, proxies, metrics)


def token_verifier(
    issuers: tuple[IssuerConfig, ...], sources: Mapping[str, IssuerSource],
    clock: Callable[[], float],
) -> TokenVerifier:
    """The verifier of every configured issuer's tokens, from their sources."""
    jwt: dict[str, tuple[IssuerPolicy, KeySource]] = {}
    opaque: list[Introspector] = []
    for issuer in issuers:
        source = sources[issuer.name]
        if isinstance(source, Introspector):
            opaque.append(source)
        else:
            jwt[issuer.issuer] = (issuer_policy(issuer), source)
    return TokenVerifier(jwt, clock, opaque=opaque)


@dataclass
class RunningGateway:
    """A started gateway: its port, health, metrics, and how to stop it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics: GatewayMetrics
    readiness: IssuerReadiness
    metrics_url: str | None = None
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _watcher: FileWatcher | None = None

    def reload(self) -> None:
        """Re-read every secret and TLS file now (SIGHUP); a failure keeps what is in use."""
        if self._watcher is not None:
            self._watcher.trigger()

    async def stop(self, grace_s: float | None) -> None:
        """Stop accepting, drain in-flight calls for up to `grace_s`, release resources."""
        self.health.enter_graceful_shutdown()
        # In-flight calls still need the event loop to finish: wait for the drain in a
        # thread while the loop goes on serving them.
        await asyncio.to_thread(self.server.stop(grace_s).wait)
        for task in self._tasks:
            task.cancel()
        for close in reversed(self._closers):
            await close()
        self._closers.clear()


@dataclass
class GatewayParts:
    """Everything behind the gRPC server: the pipeline and what it holds open."""

    pipeline: DetokenizationPipeline
    sources: dict[str, IssuerSource]
    metrics: GatewayMetrics
    audit: AuditSink | None = None  # its health is a readiness input
    abuse: AbuseGuard | None = None  # its shared store's health is `piigate.state`
    reloadables: list[Reloadable] = field(default_factory=list)  # vault keys and TLS files
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            await close()
        self._closers.clear()


def build_parts(
    config: GatewayConfig,
    *,
    clock: Callable[[], float] = time.time,
    audit: AuditSink | None = None,
    worker: int | None = None,
    tracing: Tracing | None = None,
    metrics_dir: Path | None = None,
) -> GatewayParts:
    """The pipeline and its parts, built from `config` (inside a running event loop);
    `tracing` replaces the configured one (tests export spans to memory); `metrics_dir`
    is a worker's multiprocess metrics directory (`piigate.telemetry.metrics`, rule 6)."""
    metrics = GatewayMetrics(multiprocess_dir=metrics_dir)
    # Hash-chained (`piigate audit verify FILE` finds the first broken link). A torn final
    # line is cut and recorded by a repair marker; any other damage, or another process
    # writing the trail, stops start-up. Opened first, so that failing here leaves nothing
    # else open.
    audit_path = config.audit.path
    if audit_path is not None and worker is not None:
        audit_path = audit_path.with_name(f"{audit_path.name}.{worker}")
    # Read before anything is opened: files changed since the config was read fail here.
    vault_tls = VaultTls(config.vault.tls) if config.vault.tls is not None else None
    sink = audit or ChainedJsonLinesSink.open(audit_path, config.audit.fsync, clock=clock)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.vault.max_connections, ttl_dns_cache=300),
        raise_for_status=False,
        auto_decompress=False,
    )
    sources = {i.name: issuer_source(i, session, clock, config.proxies, metrics)
               for i in config.issuers}
    client = VaultClient(  # its own connection pool (piigate.vault.http1), not the session
        config.vault.url, config.vault.max_response_bytes,
        max_connections=config.vault.max_connections,
        route=config.proxies.route(yarl.URL(config.vault.url)), tls=vault_tls,
    )
    traced = tracing or tracing_from_config(config.telemetry)
    # With tracing on, each vault HTTP call is a span whose traceparent goes along.
    vault: Vault = TracedVault(client, traced) if traced.on else client
    vault = MeasuredVault(vault, metrics.vault_call, vault_outcome)  # each real vault call
    v = config.vault
    if v.coalesce:
        vault = CoalescingVault(
            vault, v.coalesce_wait_s, v.coalesce_max_batch, v.coalesce_max_inflight
        )
    verifier = token_verifier(config.issuers, sources, clock)
    issuers = {i.name: i for i in config.issuers}
    pipeline = DetokenizationPipeline(
        callers=BearerCallerAuthenticator(verifier, config.caller, issuers),
        profiles=(profiles := ProfileIndex(config.profiles)),
        decider=SubjectDecider(subject_verifier(verifier, traced), issuers),
        vault=vault,
        recorder=AuditRecorder(sink, metrics),
        abuse=(abuse := AbuseGuard.from_config(config.profiles, config.state, clock, metrics)),
        limits=Limits(config.server.request_timeout_s, config.vault.timeout_s,
                      config.server.max_batch_size),
        clock=clock,
        tracing=traced,
    )
    parts = GatewayParts(pipeline, sources, metrics, sink, abuse,
                         _vault_reloadables(config, profiles, vault_tls))
    if isinstance(sink, ChainedJsonLinesSink):
        sink.time_with(metrics.audit_write, metrics.audit_fsync)
    metrics.watch(sources, sink if isinstance(sink, AuditHealth) else None, abuse.state_health)
    if tracing is None:
        parts._closers.append(traced.aclose)  # last: spans of the final calls are exported
    parts._closers += [session.close, client.aclose, sink.close, abuse.aclose]
    if isinstance(vault, CoalescingVault):
        parts._closers.append(vault.aclose)
    parts._closers += [s.aclose for s in sources.values()]
    return parts


async def start_gateway(
    config: GatewayConfig,
    *,
    listen: ListenAddress | None = None,
    clock: Callable[[], float] = time.time,
    audit: AuditSink | None = None,
    worker: int | None = None,
    tracing: Tracing | None = None,
    metrics_dir: Path | None = None,
) -> RunningGateway:
    """Build every part from `config`, start serving, and return the running gateway.

    `worker` (0..N-1) is set for `piigate serve --workers N`: the port is shared with the
    other workers, and each keeps its own audit trail (`PATH.<worker>`). Its metrics go to
    the supervisor's `metrics_dir`, which serves them for all workers (no listener here)."""
    parts = build_parts(config, clock=clock, audit=audit, worker=worker, tracing=tracing,
                        metrics_dir=metrics_dir)
    # grpc's thread-pool server; the pipeline runs on this event loop (piigate.transport.bridge).
    server = grpc.server(
        futures.ThreadPoolExecutor(config.server.handler_threads, "piigate-rpc"),
        options=server_options(config, share_port=worker is not None),
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    service = DetokenizationService(parts.pipeline)
    detokenization_pb2_grpc.add_DetokenizationServiceServicer_to_server(
        BridgedService(service, asyncio.get_running_loop(), config.server.request_timeout_s,
                       parts.metrics.load),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)  # v1 and v1alpha
    try:
        port, credentials = _add_port(server, config, listen)
    except BaseException:
        await parts.aclose()
        raise
    readiness = IssuerReadiness(parts.sources, health_servicer, ("", SERVICE_NAME), parts.audit)
    readiness.publish()  # NOT_SERVING until every issuer's keys are in
    server.start()
    running = RunningGateway(server, port, health_servicer, parts.metrics, readiness)
    running._closers.append(parts.aclose)
    running._tasks.append(asyncio.create_task(readiness.run()))
    running._watcher = file_watcher(config, parts, credentials)
    running._tasks.append(asyncio.create_task(running._watcher.run()))
    if parts.abuse is not None:
        running._tasks.append(asyncio.create_task(parts.abuse.watch(health_servicer)))
    metrics_listen = config.server.metrics_listen
    if metrics_dir is not None and worker is not None:
        running._tasks.append(asyncio.create_task(
            publish_from_worker(parts.metrics, worker, readiness.report)))
    elif metrics_listen is not None:
        runner, url = await start_http_app(
            metrics_app(parts.metrics.exposition, readiness.report), metrics_listen
        )
        running.metrics_url = url
        running._closers.append(runner.cleanup)
    return running


def _add_port(
    server: grpc.Server, config: GatewayConfig, listen: ListenAddress | None
) -> tuple[int, ReloadingServerCredentials | None]:
    address = str(listen or config.server.listen)
    try:
        return _bind(server, config, address)
    except RuntimeError as exc:  # grpc reports a failed bind this way
        raise AddressInUse(address) from exc


def _bind(
    server: grpc.Server, config: GatewayConfig, address: str
) -> tuple[int, ReloadingServerCredentials | None]:
    tls = config.server.tls
    if tls is None:
        port: int = server.add_insecure_port(address)
        return port, None
    # The real clock: certificate validity is checked against the wall clock, not a
    # test's fake one.
    credentials = ReloadingServerCredentials(
        TlsFiles(tls.cert_file, tls.key_file, tls.client_ca_file),
        require_client_auth=tls.require_client_auth,
    )
    port = server.add_secure_port(address, credentials.credentials)
    return port, credentials


def file_watcher(
    config: GatewayConfig, parts: GatewayParts, credentials: ReloadingServerCredentials | None
) -> FileWatcher:
    """What SIGHUP and changes on disk reload: profiles' vault API key files, the vault's
    TLS files, the server's TLS files (piigate.config.secrets)."""
    watched = list(parts.reloadables)
    tls = config.server.tls
    if credentials is not None and tls is not None:
        paths = tuple(p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p)
        watched.append(Reloadable("server.tls_cert_file", paths, credentials.check,
                                  (TlsMaterialInvalid,)))
    return FileWatcher(watched, config.server.reload_interval_s, parts.metrics.secret_reload)


def _vault_reloadables(
    config: GatewayConfig, profiles: ProfileIndex, vault_tls: VaultTls | None
) -> list[Reloadable]:
    watched: list[Reloadable] = []
    for p in config.profiles:
        if (path := p.vault_api_key_file) is not None:
            watched.append(Reloadable(
                f"profiles.{p.name}.vault_api_key_file", (path,),
                functools.partial(_reload_vault_key, profiles, p.name, path),
            ))
    if vault_tls is not None:
        files = vault_tls.files
        source = "vault.client_cert_file" if files.client_cert_file else "vault.ca_file"
        watched.append(Reloadable(source, files.paths, vault_tls.reload, (VaultTlsInvalid,)))
    return watched


def _reload_vault_key(profiles: ProfileIndex, name: str, path: Path) -> bool:
    return profiles.replace_vault_key(name, read_secret_file(path, str(path)))
