"""Readiness: is every issuer's key set usable? Reported three ways.

- gRPC health (`grpc.health.v1`): the service `piigate.issuer.<name>` per issuer, and the
  overall service ("" and `piigate.v1.DetokenizationService`) SERVING only when every
  issuer has usable keys, so a load balancer never routes to a gateway that would refuse
  every token; which issuer is missing shows in its own service's status.
- `/healthz` on the metrics port: the same as JSON, with each key set's age and last error.
- gauges on `/metrics`: `piigate_jwks_ready`, `piigate_jwks_stale`, `piigate_jwks_age_seconds`,
  `piigate_jwks_keys`, `piigate_jwks_fetches`.

A key set past its stale-if-error bound is not usable: the issuer (and so the gateway)
turns NOT_SERVING, and tokens from it are refused (fail closed) until a fetch succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from grpc_health.v1 import health, health_pb2

from piigate.tokens.jwks import JwksStatus
from piigate.tokens.keys import KeySet
from piigate.transport.metrics import Gauge

log = logging.getLogger(__name__)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class KeyStatusSource(Protocol):
    async def prime(self) -> KeySet: ...

    def status(self) -> JwksStatus: ...


def issuer_service(name: str) -> str:
    return f"piigate.issuer.{name}"


class IssuerReadiness:
    """Keeps health in step with every issuer's key set."""

    def __init__(
        self,
        sources: Mapping[str, KeyStatusSource],
        health_servicer: health.HealthServicer,
        overall_services: Iterable[str],
    ) -> None:
        self._sources = dict(sources)
        self._health = health_servicer
        self._overall = tuple(overall_services)
        self._published: dict[str, int] = {}

    def ready(self) -> bool:
        return all(source.status().ready for source in self._sources.values())

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
        overall = SERVING if all(v == SERVING for v in statuses.values()) else NOT_SERVING
        wanted = {issuer_service(n): v for n, v in statuses.items()}
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
        return {"ready": self.ready(), "issuers": issuers}

    def gauges(self) -> Iterable[Gauge]:
        for name, source in self._sources.items():
            s = source.status()
            labels = {"issuer": name}
            yield Gauge("piigate_jwks_ready", "1 when the issuer's key set is usable",
                        labels, float(s.ready))
            yield Gauge("piigate_jwks_stale", "1 when serving keys past their TTL",
                        labels, float(s.stale))
            yield Gauge("piigate_jwks_age_seconds", "age of the issuer's key set",
                        labels, s.age_s if s.age_s is not None else -1.0)
            yield Gauge("piigate_jwks_keys", "usable keys in the set", labels, s.key_count)
            yield Gauge("piigate_jwks_fetches", "JWKS fetches attempted", labels, s.fetches)
