"""The composition root: the one place that builds piigate's object graph from config.

Tests hand it a fake clock (and nothing else); every other part is the real thing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from piigate.addresses import ListenAddress
from piigate.audit import AuditSink, JsonLinesSink
from piigate.caller import BearerCallerAuthenticator
from piigate.config import GatewayConfig, IssuerConfig
from piigate.jwks import JwksCache, JwksCacheSettings
from piigate.pipeline import DetokenizationPipeline, Limits
from piigate.policy import ProfileIndex
from piigate.service import DetokenizationService
from piigate.tokens import TokenVerifier
from piigate.vault import VaultClient
from piigate.verification import IssuerPolicy, TypRule
from piigate_client.v1 import detokenization_pb2, detokenization_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = detokenization_pb2.DESCRIPTOR.services_by_name["DetokenizationService"].full_name
_TYP_RULES = {
    "at+jwt": TypRule.AT_JWT,
    "any": TypRule.ANY,
    "keycloak": TypRule.KEYCLOAK,
    "cognito": TypRule.COGNITO,
}


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


def server_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """Limits set deliberately rather than left at grpc's defaults."""
    s = config.server
    return [
        ("grpc.max_receive_message_length", s.max_request_bytes),
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.max_metadata_size", s.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", s.max_metadata_bytes),
        # Off, so no other process can bind our port and take a share of the connections.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_connection_idle_ms", 15 * 60_000),
    ]


@dataclass
class RunningGateway:
    """A started gateway: its port, health, and how to stop it."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    _closers: list[Callable[[], object]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace_s: float | None) -> None:
        """Stop accepting, drain in-flight calls for up to `grace_s`, release resources."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        for task in self._tasks:
            task.cancel()
        for close in reversed(self._closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def start_gateway(
    config: GatewayConfig,
    *,
    listen: ListenAddress | None = None,
    clock: Callable[[], float] = time.time,
    audit: AuditSink | None = None,
) -> RunningGateway:
    """Build every part from `config`, start serving, and return the running gateway."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.vault.max_connections, ttl_dns_cache=300),
        raise_for_status=False,
        auto_decompress=False,
    )
    caches = {
        i.issuer: (
            issuer_policy(i),
            JwksCache(
                i.jwks_uri, session, clock,
                JwksCacheSettings(allowed_algorithms=i.algorithms), issuer_name=i.name,
            ),
        )
        for i in config.issuers
    }
    verifier = TokenVerifier(caches, clock)
    callers = BearerCallerAuthenticator(
        verifier,
        audience=config.caller.audience,
        trusted_issuers=frozenset(config.caller.issuers),
        client_id_claims={i.name: i.client_id_claims for i in config.issuers},
    )
    sink = audit or JsonLinesSink.open(config.audit.path, config.audit.fsync)
    pipeline = DetokenizationPipeline(
        callers=callers,
        profiles=ProfileIndex(config.profiles),
        verifier=verifier,
        issuers={i.name: i for i in config.issuers},
        vault=VaultClient(session, config.vault.url, config.vault.max_response_bytes),
        audit=sink,
        limits=Limits(config.server.request_timeout_s, config.vault.timeout_s),
        clock=clock,
    )

    server = grpc.aio.server(
        options=server_options(config),
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    detokenization_pb2_grpc.add_DetokenizationServiceServicer_to_server(
        DetokenizationService(pipeline), server
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = str(listen or config.server.listen)
    tls = config.server.tls
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    running = RunningGateway(server, port, health_servicer)
    running._closers += [session.close, sink.close]
    running._tasks.append(
        asyncio.create_task(_become_ready(health_servicer, [c for _, c in caches.values()]))
    )
    return running


async def _become_ready(
    health_servicer: health.aio.HealthServicer, caches: list[JwksCache]
) -> None:
    """Report SERVING once every issuer's keys are loaded; retry with backoff until then."""
    delay = 0.5
    while True:
        results = await asyncio.gather(*(c.prime() for c in caches), return_exceptions=True)
        if not any(isinstance(r, BaseException) for r in results):
            break
        log.warning("issuer keys not loaded yet; health stays NOT_SERVING")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
