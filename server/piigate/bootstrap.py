"""The composition root: the one place that builds piigate's object graph from config.

Tests hand it a fake clock (and, where they watch it, an audit sink); every other part is
the real thing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass, field

import aiohttp
import grpc
from grpc_health.v1 import health, health_pb2_grpc

from piigate.audit.event import AuditSink
from piigate.audit.recorder import AuditRecorder
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.config import GatewayConfig, IssuerConfig
from piigate.identity.caller import BearerCallerAuthenticator
from piigate.limits.abuse import AbuseGuard
from piigate.pipeline import DetokenizationPipeline, Limits, SubjectDecider
from piigate.policy.profiles import ProfileIndex
from piigate.tokens.discovery import DiscoveredJwks
from piigate.tokens.jwks import JwksCache, JwksCacheSettings
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate.tokens.verifier import TokenVerifier
from piigate.transport.addresses import AddressInUse, ListenAddress
from piigate.transport.bridge import BridgedService
from piigate.transport.http import start_http_app
from piigate.transport.metrics import Metrics, metrics_app
from piigate.transport.readiness import IssuerReadiness
from piigate.transport.reflection import enable_reflection
from piigate.transport.service import DetokenizationService
from piigate.transport.tls import ReloadingServerCredentials, TlsFiles
from piigate.vault.client import VaultClient
from piigate.vault.coalescing import CoalescingVault
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
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
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
    issuer: IssuerConfig, session: aiohttp.ClientSession, clock: Callable[[], float]
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
    )
    if issuer.jwks_uri is None:
        return DiscoveredJwks(issuer.issuer, session, clock, settings, issuer_name=issuer.name)
    return JwksCache(issuer.jwks_uri, session, clock, settings, issuer_name=issuer.name)


@dataclass
class RunningGateway:
    """A started gateway: its port, health, metrics, and how to stop it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    metrics: Metrics
    readiness: IssuerReadiness
    metrics_url: str | None = None
    _closers: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
    sources: dict[str, KeySource]
    metrics: Metrics
    audit: AuditSink | None = None  # its health is a readiness input
    abuse: AbuseGuard | None = None  # its shared store's health is `piigate.state`
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
) -> GatewayParts:
    """The pipeline and its parts, built from `config` (inside a running event loop)."""
    # Hash-chained (`piigate audit verify FILE` finds the first broken link). A torn final
    # line is cut and recorded by a repair marker; any other damage, or another process
    # writing the trail, stops start-up. Opened first, so that failing here leaves nothing
    # else open.
    audit_path = config.audit.path
    if audit_path is not None and worker is not None:
        audit_path = audit_path.with_name(f"{audit_path.name}.{worker}")
    sink = audit or ChainedJsonLinesSink.open(audit_path, config.audit.fsync, clock=clock)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.vault.max_connections, ttl_dns_cache=300),
        raise_for_status=False,
        auto_decompress=False,
    )
    sources = {i.name: key_source(i, session, clock) for i in config.issuers}
    vault: VaultClient | CoalescingVault = VaultClient(
        session, config.vault.url, config.vault.max_response_bytes
    )
    v = config.vault
    if v.coalesce:
        vault = CoalescingVault(
            vault, v.coalesce_wait_s, v.coalesce_max_batch, v.coalesce_max_inflight
        )
    verifier = TokenVerifier(
        {i.issuer: (issuer_policy(i), sources[i.name]) for i in config.issuers}, clock
    )
    issuers = {i.name: i for i in config.issuers}
    metrics = Metrics()
    metrics.counter("piigate_decisions_total", "Detokenize outcomes by profile and reason")
    metrics.counter("piigate_denied_claims_total",
                    "subject tokens carrying a claim on their issuer's deny list")
    pipeline = DetokenizationPipeline(
        callers=BearerCallerAuthenticator(verifier, config.caller, issuers),
        profiles=ProfileIndex(config.profiles),
        decider=SubjectDecider(verifier, issuers),
        vault=vault,
        recorder=AuditRecorder(sink, metrics),
        abuse=(abuse := AbuseGuard.from_config(config.profiles, config.state, clock, metrics)),
        limits=Limits(config.server.request_timeout_s, config.vault.timeout_s,
                      config.server.max_batch_size),
        clock=clock,
    )
    parts = GatewayParts(pipeline, sources, metrics, sink, abuse)
    parts._closers += [session.close, sink.close, abuse.aclose]
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
) -> RunningGateway:
    """Build every part from `config`, start serving, and return the running gateway.

    `worker` (0..N-1) is set for `piigate serve --workers N`: the port is shared with the
    other workers, and each keeps its own audit trail (`PATH.<worker>`) and metrics port
    (`metrics_listen` port + worker, when not 0)."""
    parts = build_parts(config, clock=clock, audit=audit, worker=worker)
    # grpc's thread-pool server; the pipeline runs on this event loop (piigate.transport.bridge).
    server = grpc.server(
        futures.ThreadPoolExecutor(config.server.handler_threads, "piigate-rpc"),
        options=server_options(config, share_port=worker is not None),
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    service = DetokenizationService(parts.pipeline)
    detokenization_pb2_grpc.add_DetokenizationServiceServicer_to_server(
        BridgedService(service, asyncio.get_running_loop(), config.server.request_timeout_s),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)  # v1 and v1alpha
    try:
        port = _add_port(server, config, listen)
    except BaseException:
        await parts.aclose()
        raise
    readiness = IssuerReadiness(parts.sources, health_servicer, ("", SERVICE_NAME), parts.audit)
    readiness.publish()  # NOT_SERVING until every issuer's keys are in
    server.start()
    running = RunningGateway(server, port, health_servicer, parts.metrics, readiness)
    running._closers.append(parts.aclose)
    running._tasks.append(asyncio.create_task(readiness.run()))
    parts.metrics.gauges(readiness.gauges)
    if parts.abuse is not None:
        running._tasks.append(asyncio.create_task(parts.abuse.watch(health_servicer)))
        parts.metrics.gauges(parts.abuse.gauges)
    metrics_listen = config.server.metrics_listen
    if metrics_listen is not None:
        if worker is not None and metrics_listen.port:
            metrics_listen = ListenAddress(metrics_listen.host, metrics_listen.port + worker)
        runner, url = await start_http_app(
            metrics_app(parts.metrics, readiness.report), metrics_listen
        )
        running.metrics_url = url
        running._closers.append(runner.cleanup)
    return running


def _add_port(server: grpc.Server, config: GatewayConfig, listen: ListenAddress | None) -> int:
    address = str(listen or config.server.listen)
    try:
        return _bind(server, config, address)
    except RuntimeError as exc:  # grpc reports a failed bind this way
        raise AddressInUse(address) from exc


def _bind(server: grpc.Server, config: GatewayConfig, address: str) -> int:
    tls = config.server.tls
    if tls is None:
        port: int = server.add_insecure_port(address)
        return port
    # The real clock: certificate validity is checked against the wall clock, not a
    # test's fake one.
    credentials = ReloadingServerCredentials(
        TlsFiles(tls.cert_file, tls.key_file, tls.client_ca_file),
        require_client_auth=tls.require_client_auth,
    )
    port = server.add_secure_port(address, credentials.credentials)
    return port
