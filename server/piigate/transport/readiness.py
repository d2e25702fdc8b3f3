"""Readiness: is every issuer's key set usable, and can the audit trail be written?
Reported three ways.

- gRPC health (`grpc.health.v1`): the service `piigate.issuer.<name>` per issuer,
  `piigate.audit` for the audit trail, and the overall service ("" and
  `piigate.v1.DetokenizationService`) SERVING only when every issuer has usable keys and
  the trail takes events, so a load balancer never routes to a gateway that would refuse
  every call; which part is missing shows in its own service's status.
- `/healthz` on the metrics port: the same as JSON, with each key set's age and last error
  and the trail's failure counts.
- metrics on `/metrics` (`piigate.telemetry.metrics` reads the same sources):
  `piigate_jwks_ready`, `piigate_jwks_stale`, `piigate_jwks_age_seconds`,
  `piigate_jwks_keys`, `piigate_jwks_fetches_total`; `piigate_audit_ready`,
  `piigate_audit_failures_total`, `piigate_audit_recoveries_total`,
  `piigate_audit_unrecorded_total`.

A key set past its stale-if-error bound is not usable: the issuer (and so the gateway)
turns NOT_SERVING, and tokens from it are refused (fail closed) until a fetch succeeds.
An audit sink that cannot write refuses every event, so no PII is disclosed (fail closed);
the gateway is NOT_SERVING from its first failure until the sink recovers by itself
(`piigate.audit.sink`, rule 4), published the moment its health changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from grpc_health.v1 import health, health_pb2

from piigate.audit.event import AuditSink
from piigate.audit.health import HealthListener, SinkHealth
from piigate.tokens.jwks import JwksStatus
from piigate.tokens.keys import KeySet

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
AUDIT_SERVICE = "piigate.audit"


class KeyStatusSource(Protocol):
    async def prime(self) -> KeySet: ...

    def status(self) -> JwksStatus: ...


@runtime_checkable
class AuditHealth(Protocol):
    """An audit sink that reports its health (`ChainedJsonLinesSink` does)."""

    @property
    def healthy(self) -> bool: ...

    def health(self) -> SinkHealth: ...

    def add_health_listener(self, listener: HealthListener) -> None: ...


def issuer_service(name: str) -> str:
    return f"piigate.issuer.{name}"


class IssuerReadiness:
    """Keeps health in step with every issuer's key set and with the audit sink, when it
    reports its health (a sink that does not is taken as always able to write)."""

    def __init__(
        self,
        sources: Mapping[str, KeyStatusSource],
        health_servicer: health.HealthServicer,
        overall_services: Iterable[str],
        audit: AuditSink | None = None,
    ) -> None:
        self._sources = dict(sources)
        self._health = health_servicer
        self._overall = tuple(overall_services)
        self._published: dict[str, int] = {}
        self._audit = audit if isinstance(audit, AuditHealth) else None
        if self._audit is not None:
            self._audit.add_health_listener(self._audit_changed)

    def ready(self) -> bool:
        return self._audit_ready() and all(
            source.status().ready for source in self._sources.values()
        )

    def _audit_ready(self) -> bool:
        return self._audit is None or self._audit.healthy

    def _audit_changed(self, healthy: bool) -> None:
        self.publish()  # at once: the readiness loop may be sleeping for seconds

    async def run(self, interval_s: float = 5.0) -> None:
        """Fetch missing key sets (backing off) and publish health until cancelled."""
        delay = 0.25
        while True:
            missing = [n for n, s in self._sources.items() if not s.status().ready]
            if missing:
                results = await asyncio.gather(
                    *(self._sources[n].prime() for n in missing), return_exceptions=True
                )
                for name, result in zip(missing, results, strict=True):
                    if isinstance(result, BaseException):
                        log.warning("issuer %s has no usable keys yet", name)
            self.publish()
            delay = interval_s if self.ready() else min(delay * 2, interval_s)
            await asyncio.sleep(delay)

    def publish(self) -> None:
        statuses = {n: SERVING if s.status().ready else NOT_SERVING
                    for n, s in self._sources.items()}
        audit = SERVING if self._audit_ready() else NOT_SERVING
        overall = SERVING if all(v == SERVING for v in (*statuses.values(), audit)) else NOT_SERVING
        wanted = {issuer_service(n): v for n, v in statuses.items()}
        if self._audit is not None:
            wanted[AUDIT_SERVICE] = audit
        wanted.update({service: overall for service in self._overall})
        for service, status in wanted.items():
            if self._published.get(service) != status:
                self._health.set(service, status)  # thread-safe
                self._published[service] = status

    def report(self) -> dict[str, object]:
        issuers = {}
        for name, source in self._sources.items():
            s = source.status()
            issuers[name] = {"ready": s.ready, "stale": s.stale, "age_s": s.age_s,
                             "keys": s.key_count, "fetches": s.fetches,
                             "last_error": s.last_error}
        report: dict[str, object] = {"ready": self.ready(), "issuers": issuers}
        if self._audit is not None:
            a = self._audit.health()
            report["audit"] = {"ready": a.healthy, "failures": a.failures,
                               "recoveries": a.recoveries, "unrecorded": a.unrecorded,
                               "last_error": a.last_error}
        return report
