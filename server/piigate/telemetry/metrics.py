"""Every Prometheus metric of a gateway (prometheus-client), and the multiprocess mode of
`piigate serve --workers N`; `piigate.telemetry.endpoint` serves them over HTTP. The
README's "Metrics" table lists each one.

Rules:

1. One `CollectorRegistry` per gateway, never the library's global one, so a test (or a
   benchmark) can run many gateways in one process and read each one's values.
2. Labels are configuration names (profile, issuer) and fixed codes (method, outcome,
   error reason, operation) only: never a token, a subject, a field value or text a
   client sent. Each family's label set is bounded by the configuration.
3. The request path observes through label children bound once per label tuple
   (`_Labelled`): a dict lookup and a plain method call per observation, no per-call
   dict of labels.
4. Durations are measured with `time.perf_counter`, never with the gateway's injectable
   clock (tests move that one by hours).
5. Values other parts already keep (key-set freshness, audit and state-store health and
   their failure counts) are read from them at each `refresh`: at scrape time for a
   single process, every second in a worker (`piigate.telemetry.endpoint`). A count kept
   elsewhere is exported as a real counter (`_Mirror` adds what it grew by), so it sums
   across workers.
6. `--workers N` (multiprocess mode): the supervisor creates a `PROMETHEUS_MULTIPROC_DIR`
   for its workers; each worker's metrics live in memory-mapped files there, and the
   supervisor alone serves `/metrics` (`MultiProcessCollector`: counters and histograms
   summed over workers, each gauge by its `multiprocess_mode`) and `/healthz` (from the
   readiness report each worker publishes there): `piigate.telemetry.endpoint`. The
   library picks its storage when it is first imported, from that environment variable:
   a worker checks it is really in that mode (`_require_multiprocess`) rather than
   silently counting in private memory.
7. Process metrics: prometheus-client's process collector for a single process. Under
   `--workers N` a custom collector cannot run in the supervisor for its workers, so each
   worker copies its own readings into multiprocess metrics of the same names: CPU
   seconds, resident and virtual memory and open fds are the workers' sums, the start
   time the earliest worker's, max fds the lowest. The supervisor's own are not exported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import choose_encoder

from piigate import __version__

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # the library's own switch (rule 6)

# Seconds. A call is a few milliseconds when all is well; budgets end at seconds.
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0)
# An audit write without fsync, or a store round trip, is tens of microseconds.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5)

Labelled = TypeVar("Labelled", Counter, Gauge, Histogram)
GaugeMode = Literal["livemin", "livemax", "livesum"]  # how workers' values combine
#: `(failure, seconds)`: a fetch's failure detail (None when it succeeded) and duration.
FetchObserver = Callable[[str | None, float], None]


class KeySetStatus(Protocol):
    """What rule 5 reads of an issuer's key set (`piigate.tokens.jwks.JwksStatus`)."""

    @property
    def ready(self) -> bool: ...
    @property
    def stale(self) -> bool: ...
    @property
    def age_s(self) -> float | None: ...
    @property
    def key_count(self) -> int: ...
    @property
    def fetches(self) -> int: ...


class KeySource(Protocol):
    def status(self) -> KeySetStatus: ...


class AuditHealthStatus(Protocol):
    """`piigate.audit.health.SinkHealth`."""

    @property
    def healthy(self) -> bool: ...
    @property
    def failures(self) -> int: ...
    @property
    def recoveries(self) -> int: ...
    @property
    def unrecorded(self) -> int: ...


class AuditHealthSource(Protocol):
    def health(self) -> AuditHealthStatus: ...


class StateHealthStatus(Protocol):
    """`piigate.limits.health.StateHealth`."""

    @property
    def ready(self) -> bool: ...
    @property
    def failures(self) -> int: ...
    @property
    def recoveries(self) -> int: ...


class _Labelled(Generic[Labelled]):
    """A metric's label children, each bound once (rule 3)."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Labelled) -> None:
        self._metric: Labelled = metric
        self._children: dict[tuple[str, ...], Labelled] = {}

    def get(self, *labels: str) -> Labelled:
        child = self._children.get(labels)
        if child is None:  # a race only binds the same child twice: labels() is locked
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class _Mirror:
    """A counter following a count kept elsewhere (rule 5): adds what it grew by."""

    __slots__ = ("_counter", "_seen")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self._seen = 0.0

    def follow(self, total: float) -> None:
        if total > self._seen:
            self._counter.inc(total - self._seen)
            self._seen = total


class CallLoad:
    """Calls inside the bridge (`piigate.transport.bridge`): queued = handed from a grpc
    handler thread to the event loop and not yet started there; in flight = started on
    the loop and not yet answered. A call waiting for a free handler thread is in grpc's
    own queue and counted in neither (at most `server.handler_threads` are in both)."""

    __slots__ = ("_in_flight", "_queued")

    def __init__(self, queued: Gauge, in_flight: Gauge) -> None:
        self._queued = queued
        self._in_flight = in_flight

    def handed_over(self) -> list[None]:
        """Count a call queued; the ticket it returns leaves the queue exactly once."""
        self._queued.inc()
        return [None]

    def left_queue(self, ticket: list[None]) -> None:
        """The call started, or will never start: whichever side comes first counts it
        out (the loop starting it and the thread giving up on it can race)."""
        try:
            ticket.pop()  # atomic: only one of the two sides gets the item
        except IndexError:
            return
        self._queued.dec()

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self) -> None:
        self._in_flight.dec()


class GatewayMetrics:
    """Every metric of one gateway, in its own registry (rule 1).

    `multiprocess_dir` is set for a worker of `piigate serve --workers N` (rule 6)."""

    def __init__(self, *, multiprocess_dir: Path | None = None,
                 version: str = __version__) -> None:
        # No `_created` series: they would double every family.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if multiprocess_dir is not None:
            _require_multiprocess(multiprocess_dir)
        self.multiprocess_dir = multiprocess_dir
        self.registry = r = CollectorRegistry(auto_describe=True)
        call_labels = ("method", "profile", "outcome")
        self._decisions = Counter(
            "piigate_decisions", "Decisions recorded (one per Detokenize, one per item of a "
            "BatchDetokenize), by method, profile, audit outcome and error reason",
            (*call_labels, "reason"), registry=r)
        self._decision_seconds = Histogram(
            "piigate_decision_duration_seconds", "From a call's start on the event loop "
            "until its decision (or a batch item's) is recorded, audit write included",
            call_labels, buckets=CALL_BUCKETS, registry=r)
        self._bound: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self._denied_claims = _Labelled(Counter(
            "piigate_denied_claims", "Subject tokens carrying a claim on their issuer's "
            "deny list, by issuer and claim name", ("issuer", "claim"), registry=r))
        self._state_failures = _Labelled(Counter(
            "piigate_state_failures", "Calls decided without the shared state store, by "
            "profile and outcome (refused: fail closed; admitted: fail open)",
            ("profile", "outcome"), registry=r))
        self._vault = _Labelled(Histogram(
            "piigate_vault_request_duration_seconds", "Detokenize calls to the vault (a "
            "coalesced call once), by outcome", ("outcome",), buckets=CALL_BUCKETS,
            registry=r))
        self._jwks_fetch = _Labelled(Histogram(
            "piigate_jwks_fetch_duration_seconds", "JWKS fetches, by issuer and outcome",
            ("issuer", "outcome"), buckets=CALL_BUCKETS, registry=r))
        self._discovery_fetch = _Labelled(Histogram(
            "piigate_discovery_fetch_duration_seconds", "OpenID discovery document "
            "fetches, by issuer and outcome", ("issuer", "outcome"), buckets=CALL_BUCKETS,
            registry=r))
        self._audit_write = _by_success(Histogram(
            "piigate_audit_write_duration_seconds", "Audit event writes, until durable "
            "as configured (fsync included), by outcome", ("outcome",),
            buckets=FAST_BUCKETS, registry=r))
        self._audit_fsync = _by_success(Histogram(
            "piigate_audit_fsync_duration_seconds", "Audit trail fsyncs (one covers "
            "every line written before it began), by outcome", ("outcome",),
            buckets=FAST_BUCKETS, registry=r))
        self._store = _Labelled(Histogram(
            "piigate_state_store_request_duration_seconds", "Calls to the shared state "
            "store, by operation and outcome", ("operation", "outcome"),
            buckets=FAST_BUCKETS, registry=r))
        self._secret_reloads = _Labelled(Counter(
            "piigate_secret_reloads", "Secret and TLS files reloaded (new material taken) or "
            "refused (the current material kept), by the config key naming them and outcome",
            ("source", "outcome"), registry=r))
        self.load = CallLoad(
            Gauge("piigate_calls_queued", "Calls handed to the event loop and not yet "
                  "started there", registry=r, multiprocess_mode="livesum"),
            Gauge("piigate_calls_in_flight", "Calls started on the event loop and not "
                  "yet answered", registry=r, multiprocess_mode="livesum"))
        Gauge("piigate_build_info", "Always 1; the running piigate version as a label",
              ("version",), registry=r, multiprocess_mode="livemax").labels(version).set(1)
        self._readiness = _ReadinessMetrics(r)
        self._process: _ProcessMirror | None = None
        if multiprocess_dir is None:
            ProcessCollector(registry=r)
        else:
            self._process = _ProcessMirror(r)

    # --- the request path (rule 3) ----------------------------------------------------
    def decided(self, method: str, profile: str, outcome: str, reason: str,
                seconds: float) -> None:
        """One recorded decision: `outcome` is the audit outcome (allowed, denied,
        failed), `reason` its ErrorInfo reason (OK when allowed)."""
        key = (method, profile, outcome, reason)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = (
                self._decisions.labels(method, profile, outcome, reason),
                self._decision_seconds.labels(method, profile, outcome))
        bound[0].inc()
        bound[1].observe(seconds)

    def denied_claim(self, issuer: str, claim: str) -> None:
        self._denied_claims.get(issuer, claim).inc()

    def state_failure(self, profile: str, outcome: str) -> None:
        self._state_failures.get(profile, outcome).inc()

    def vault_call(self, outcome: str, seconds: float) -> None:
        self._vault.get(outcome).observe(seconds)

    def audit_write(self, ok: bool, seconds: float) -> None:
        self._audit_write[ok].observe(seconds)

    def audit_fsync(self, ok: bool, seconds: float) -> None:
        self._audit_fsync[ok].observe(seconds)

    def state_store_call(self, operation: str, outcome: str, seconds: float) -> None:
        self._store.get(operation, outcome).observe(seconds)

    def secret_reload(self, source: str, outcome: str) -> None:
        """A reload of the files `source` (a config key) names: reloaded or failed."""
        self._secret_reloads.get(source, outcome).inc()

    def jwks_fetch_observer(self, issuer: str) -> FetchObserver:
        """For one issuer's `JwksCache`: each fetch's failure detail and duration."""
        return self._fetch_observer(self._jwks_fetch, issuer)

    def discovery_observer(self, issuer: str) -> FetchObserver:
        """For one issuer's `DiscoveredJwks`: each discovery fetch."""
        return self._fetch_observer(self._discovery_fetch, issuer)

    @staticmethod
    def _fetch_observer(histogram: _Labelled[Histogram], issuer: str) -> FetchObserver:
        def observe(failure: str | None, seconds: float) -> None:
            histogram.get(issuer, fetch_outcome(failure)).observe(seconds)
        return observe

    # --- rule 5 ---------------------------------------------------------------------------
    def watch(self, sources: Mapping[str, KeySource], audit: AuditHealthSource | None = None,
              state: StateHealthStatus | None = None) -> None:
        """Where `refresh` reads the issuers' key sets and the audit and store health."""
        self._readiness.watch(sources, audit, state)

    def refresh(self) -> None:
        self._readiness.refresh()
        if self._process is not None:
            self._process.refresh()

    # --- reading ----------------------------------------------------------------------
    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """This gateway's metrics as the scraper's `Accept` asks (Prometheus text 0.0.4
        unless it asks for OpenMetrics), and the content type. A single process only: a
        worker's metrics are the supervisor's to serve (`endpoint.WorkerMetrics`)."""
        self.refresh()
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 when it was never set), for tests and tools."""
        self.refresh()
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found


def _by_success(histogram: Histogram) -> dict[bool, Histogram]:
    """Both children of an ok/error histogram, bound at once (and so exported from the
    start, which `rate()` over them wants)."""
    return {True: histogram.labels("ok"), False: histogram.labels("error")}


def fetch_outcome(failure: str | None) -> str:
    """A fetch failure's fixed outcome label (the details name exception classes and
    HTTP statuses: bounded, but more than a dashboard wants)."""
    if failure is None:
        return "ok"
    detail = failure.removeprefix("discovery_")
    if detail == "timeout":
        return "timeout"
    if detail.startswith("http_"):
        return "http_error"
    if detail.startswith("client_"):
        return "unreachable"
    if detail.startswith("internal_"):
        return "error"
    return "invalid"  # a body that is not a usable JWKS or discovery document


def vault_outcome(reason: str) -> str:
    """A vault failure's outcome label: its reason without the prefix, lower case."""
    if reason.startswith("VAULT_"):
        return reason.removeprefix("VAULT_").lower()
    return "error"


class _ReadinessMetrics:
    """The gauges and mirrored counters of rule 5. The audit and state-store families
    exist only once there is a sink or a shared store to report (a gateway on the memory
    store must not show a store that is down)."""

    def __init__(self, r: CollectorRegistry) -> None:
        self._registry = r
        issuer = ("issuer",)
        self._jwks_ready = _Labelled(self._gauge(
            "piigate_jwks_ready", "1 when the issuer's key set is usable", issuer, "livemin"))
        self._jwks_stale = _Labelled(self._gauge(
            "piigate_jwks_stale", "1 when serving keys past their TTL", issuer, "livemax"))
        self._jwks_age = _Labelled(self._gauge(
            "piigate_jwks_age_seconds", "Age of the issuer's key set (-1: none yet)", issuer,
            "livemax"))
        self._jwks_keys = _Labelled(self._gauge(
            "piigate_jwks_keys", "Usable keys in the issuer's set", issuer, "livemin"))
        self._jwks_fetches = _Labelled(Counter(
            "piigate_jwks_fetches", "JWKS fetches attempted", issuer, registry=r))
        self._fetches: dict[str, _Mirror] = {}
        self._sources: Mapping[str, KeySource] = {}
        self._audit: tuple[AuditHealthSource, Gauge, tuple[_Mirror, ...]] | None = None
        self._state: tuple[StateHealthStatus, Gauge, tuple[_Mirror, ...]] | None = None

    def _gauge(self, name: str, text: str, labels: tuple[str, ...], mode: GaugeMode) -> Gauge:
        return Gauge(name, text, labels, registry=self._registry, multiprocess_mode=mode)

    def _mirror(self, name: str, text: str) -> _Mirror:
        return _Mirror(Counter(name, text, registry=self._registry))

    def watch(self, sources: Mapping[str, KeySource], audit: AuditHealthSource | None,
              state: StateHealthStatus | None) -> None:
        self._sources = dict(sources)
        for name in sources:
            self._fetches.setdefault(name, _Mirror(self._jwks_fetches.get(name)))
        if audit is not None and self._audit is None:
            self._audit = (audit, self._gauge(
                "piigate_audit_ready", "1 when the audit trail takes events", (), "livemin"), (
                self._mirror("piigate_audit_failures", "Failed audit writes, fsyncs and cuts"),
                self._mirror("piigate_audit_recoveries", "Audit trail recoveries after a "
                             "failure"),
                self._mirror("piigate_audit_unrecorded", "Events refused because the trail "
                             "had failed")))
        if state is not None and self._state is None:
            self._state = (state, self._gauge(
                "piigate_state_ready", "1 when the shared state store answers", (),
                "livemin"), (
                self._mirror("piigate_state_store_failures", "Calls to the shared state "
                             "store that failed"),
                self._mirror("piigate_state_store_recoveries", "Returns of the shared state "
                             "store")))

    def refresh(self) -> None:
        for name, source in self._sources.items():
            s = source.status()
            self._jwks_ready.get(name).set(float(s.ready))
            self._jwks_stale.get(name).set(float(s.stale))
            self._jwks_age.get(name).set(-1.0 if s.age_s is None else s.age_s)
            self._jwks_keys.get(name).set(s.key_count)
            self._fetches[name].follow(s.fetches)
        if self._audit is not None:
            sink, ready, counts = self._audit
            a = sink.health()
            ready.set(float(a.healthy))
            for counted, total in zip(counts, (a.failures, a.recoveries, a.unrecorded),
                                      strict=True):
                counted.follow(total)
        if self._state is not None:
            st, ready, counts = self._state
            ready.set(float(st.ready))
            for counted, total in zip(counts, (st.failures, st.recoveries), strict=True):
                counted.follow(total)


class _ProcessMirror:
    """Rule 7: this worker's process readings, as multiprocess metrics."""

    _GAUGES: tuple[tuple[str, str, GaugeMode], ...] = (
        ("process_resident_memory_bytes", "Resident memory size", "livesum"),
        ("process_virtual_memory_bytes", "Virtual memory size", "livesum"),
        ("process_open_fds", "Open file descriptors", "livesum"),
        ("process_max_fds", "Maximum open file descriptors", "livemin"),
        ("process_start_time_seconds", "Start time since the epoch", "livemin"),
    )

    def __init__(self, r: CollectorRegistry) -> None:
        self._collector = ProcessCollector(registry=None)
        self._cpu = _Mirror(Counter("process_cpu_seconds", "User and system CPU time",
                                    registry=r))
        self._gauges = {
            name: Gauge(name, text, registry=r, multiprocess_mode=mode)
            for name, text, mode in self._GAUGES
        }

    def refresh(self) -> None:
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    self._cpu.follow(sample.value)
                elif sample.name in self._gauges:
                    self._gauges[sample.name].set(sample.value)


def _require_multiprocess(directory: Path) -> None:
    in_mode = getattr(prometheus_values.ValueClass, "_multiprocess", False)
    if not in_mode or os.environ.get(MULTIPROC_ENV) != str(directory):
        raise RuntimeError(f"{MULTIPROC_ENV} must be set to the workers' metrics directory "
                           "before prometheus_client is imported")
