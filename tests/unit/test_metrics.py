"""The gateway's metrics (`piigate.telemetry.metrics`) on their own: one registry per
gateway, names by Prometheus' conventions, what each observation moves, values read off
other parts, the bridge's queue accounting and the vault call's outcomes; and the
exposition read back with prometheus-client's own parser; the supervisor's `/healthz`
over its workers' reports."""

from __future__ import annotations

import asyncio
import json
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from piigate import __version__
from piigate.errors import VaultUnavailable
from piigate.telemetry.endpoint import READINESS_STALE_S, WorkerMetrics, readiness_file
from piigate.telemetry.metrics import GatewayMetrics, fetch_outcome, vault_outcome
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import MeasuredVault

QUERY = DetokenizeQuery("users", ("t1",), ("ssn",), "Other", None, "key")


def samples(metrics: GatewayMetrics, accept: str | None = None) -> dict[str, list[Sample]]:
    """Every family of a scrape, parsed by prometheus-client's parser, by name."""
    body, _ = metrics.exposition(accept)
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@dataclass
class KeyStatus:
    ready: bool = True
    stale: bool = False
    age_s: float | None = 12.5
    key_count: int = 2
    fetches: int = 1


@dataclass
class KeySource:
    now: KeyStatus

    def status(self) -> KeyStatus:
        return self.now


@dataclass
class AuditStatus:
    healthy: bool = True
    failures: int = 0
    recoveries: int = 0
    unrecorded: int = 0


@dataclass
class Audit:
    now: AuditStatus

    def health(self) -> AuditStatus:
        return self.now


@dataclass
class State:
    ready: bool = True
    failures: int = 0
    recoveries: int = 0


def test_each_gateway_has_a_registry_of_its_own() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # no duplicate-registration error
    first.decided("Detokenize", "support", "allowed", "OK", 0.003)
    labels = {"method": "Detokenize", "profile": "support", "outcome": "allowed",
              "reason": "OK"}
    assert first.value("piigate_decisions_total", **labels) == 1
    assert second.value("piigate_decisions_total", **labels) == 0


def test_a_decision_moves_its_counter_and_its_histogram_bucket() -> None:
    metrics = GatewayMetrics()
    for seconds in (0.0008, 0.003, 0.003):
        metrics.decided("Detokenize", "support", "allowed", "OK", seconds)
    metrics.decided("BatchDetokenize", "support", "denied", "SCOPE_MISSING", 0.2)
    call = {"method": "Detokenize", "profile": "support", "outcome": "allowed"}
    assert sample(metrics, "piigate_decisions_total", **call, reason="OK") == 3
    assert sample(metrics, "piigate_decision_duration_seconds_count", **call) == 3
    assert sample(metrics, "piigate_decision_duration_seconds_bucket", **call, le="0.001") == 1
    assert sample(metrics, "piigate_decision_duration_seconds_bucket", **call, le="0.005") == 3
    assert sample(metrics, "piigate_decision_duration_seconds_sum", **call) == pytest.approx(
        0.0068)
    # The reason is on the counter only: the histogram's label set stays bounded.
    families = samples(metrics)
    histogram = families["piigate_decision_duration_seconds"]
    assert {tuple(sorted(s.labels)) for s in histogram} == {
        ("method", "outcome", "profile"), ("le", "method", "outcome", "profile")}
    denied = {"method": "BatchDetokenize", "profile": "support", "outcome": "denied"}
    assert sample(metrics, "piigate_decisions_total", **denied, reason="SCOPE_MISSING") == 1


def test_names_follow_the_conventions() -> None:
    metrics = GatewayMetrics()
    metrics.watch({"dev": KeySource(KeyStatus())}, Audit(AuditStatus()), State())
    families = {f.name: f for f in metrics.registry.collect()}
    for name, family in families.items():
        assert name.startswith(("piigate_", "process_")), name
        if family.type == "counter":
            assert all(s.name == f"{name}_total" for s in family.samples), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name  # base units
    assert "piigate_jwks_fetches" in families  # was a gauge without `_total`
    assert families["piigate_jwks_fetches"].type == "counter"
    assert sample(metrics, "piigate_build_info", version=__version__) == 1
    assert sample(metrics, "process_cpu_seconds_total") is not None  # the process collector
    assert not any(name.endswith("_created") for f in families.values()
                   for name in (s.name for s in f.samples))


def test_values_kept_elsewhere_are_read_at_each_scrape() -> None:
    metrics = GatewayMetrics()
    keys, audit, state = KeyStatus(), AuditStatus(), State(ready=False, failures=2)
    metrics.watch({"dev": KeySource(keys)}, Audit(audit), state)
    assert metrics.value("piigate_jwks_ready", issuer="dev") == 1
    assert metrics.value("piigate_jwks_age_seconds", issuer="dev") == 12.5
    assert metrics.value("piigate_state_ready") == 0
    assert metrics.value("piigate_state_store_failures_total") == 2
    keys.ready, keys.stale, keys.age_s, keys.fetches = False, True, None, 4
    audit.healthy, audit.failures, audit.unrecorded = False, 1, 3
    state.ready, state.recoveries = True, 1
    families = samples(metrics)
    assert families["piigate_jwks_ready"][0].value == 0
    assert families["piigate_jwks_stale"][0].value == 1
    assert families["piigate_jwks_age_seconds"][0].value == -1  # no key set yet
    assert families["piigate_jwks_fetches"][0].value == 4  # a counter that followed
    assert families["piigate_audit_ready"][0].value == 0
    assert families["piigate_audit_failures"][0].value == 1
    assert families["piigate_audit_unrecorded"][0].value == 3
    assert families["piigate_state_ready"][0].value == 1
    assert families["piigate_state_store_recoveries"][0].value == 1


def test_openmetrics_is_served_when_the_scraper_asks_for_it() -> None:
    metrics = GatewayMetrics()
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    _, plain = metrics.exposition(None)
    assert plain.startswith("text/plain; version=0.0.4")


def test_a_call_leaves_the_queue_once_whoever_counts_it_out() -> None:
    metrics = GatewayMetrics()
    load = metrics.load
    started, never = load.handed_over(), load.handed_over()
    assert metrics.value("piigate_calls_queued") == 2
    load.left_queue(started)  # the loop starts it...
    load.started()
    load.left_queue(started)  # ...and the thread's done callback finds nothing left
    assert (metrics.value("piigate_calls_queued"),
            metrics.value("piigate_calls_in_flight")) == (1, 1)
    load.left_queue(never)  # cancelled before the loop got to it
    load.finished()
    assert (metrics.value("piigate_calls_queued"),
            metrics.value("piigate_calls_in_flight")) == (0, 0)


@pytest.mark.parametrize(("failure", "outcome"), [
    (None, "ok"), ("timeout", "timeout"), ("discovery_timeout", "timeout"),
    ("http_status_503", "http_error"), ("discovery_http_redirect_302", "http_error"),
    ("client_ClientConnectorError", "unreachable"), ("jwks_not_json", "invalid"),
    ("response_too_large", "invalid"), ("discovery_issuer_mismatch", "invalid"),
    ("internal_KeyError", "error"),
])
def test_fetch_failures_become_a_few_fixed_outcomes(failure: str | None, outcome: str) -> None:
    assert fetch_outcome(failure) == outcome


def test_jwks_and_discovery_fetches_are_labelled_by_issuer_name_and_outcome() -> None:
    metrics = GatewayMetrics()
    metrics.jwks_fetch_observer("acme")(None, 0.02)
    metrics.discovery_observer("acme")("discovery_http_status_500", 0.5)
    assert sample(metrics, "piigate_jwks_fetch_duration_seconds_count", issuer="acme",
                  outcome="ok") == 1
    assert sample(metrics, "piigate_discovery_fetch_duration_seconds_count", issuer="acme",
                  outcome="http_error") == 1


def test_vault_outcomes_are_the_reasons_in_short() -> None:
    assert vault_outcome("VAULT_TIMEOUT") == "timeout"
    assert vault_outcome("VAULT_RESPONSE_INVALID") == "response_invalid"
    assert vault_outcome("INTERNAL") == "error"


class Vault:
    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float
                         ) -> dict[str, Any]:
        if self.behaviour == "fail":
            raise VaultUnavailable()
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        return {"t1": {"ssn": "x"}}


async def measured(behaviour: str, timeout_s: float, cut_after_s: float | None = None
                   ) -> GatewayMetrics:
    metrics = GatewayMetrics()
    vault = MeasuredVault(Vault(behaviour), metrics.vault_call, vault_outcome)
    call = vault.detokenize(QUERY, timeout_s)
    if cut_after_s is not None:  # as the coalescer's own bound, or a caller leaving, would
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(cut_after_s):
                await call
        return metrics
    expected: AbstractContextManager[object] = (
        pytest.raises(VaultUnavailable) if behaviour == "fail" else nullcontext())
    with expected:
        await call
    return metrics


@pytest.mark.parametrize(("behaviour", "timeout_s", "cut_after_s", "outcome"), [
    ("answer", 1.0, None, "ok"),
    ("fail", 1.0, None, "unavailable"),
    ("hang", 0.05, 0.05, "timeout"),  # cut at its budget: a timeout, whoever cut it
    ("hang", 5.0, 0.05, "cancelled"),  # cut long before its budget: the caller left
])
async def test_each_vault_call_is_timed_with_its_outcome(
    behaviour: str, timeout_s: float, cut_after_s: float | None, outcome: str,
) -> None:
    metrics = await measured(behaviour, timeout_s, cut_after_s)
    assert sample(metrics, "piigate_vault_request_duration_seconds_count",
                  outcome=outcome) == 1
    total = sample(metrics, "piigate_vault_request_duration_seconds_sum", outcome=outcome)
    assert total is not None
    assert 0 <= total < 60  # seconds, from a monotonic clock


def test_the_supervisors_healthz_needs_every_worker_ready_and_fresh(tmp_path: Path) -> None:
    served = WorkerMetrics(tmp_path, 2)
    report = served.readiness()
    assert report["ready"] is False  # no worker has reported yet
    assert report["workers"] == {"0": {"ready": False, "last_error": "no report"},
                                 "1": {"ready": False, "last_error": "no report"}}
    for worker in range(2):
        readiness_file(tmp_path, worker).write_text(json.dumps({"ready": True, "pid": worker}))
    assert served.readiness()["ready"] is True
    old = time.time() - READINESS_STALE_S - 5
    os.utime(readiness_file(tmp_path, 1), (old, old))  # a worker that stopped publishing
    report = served.readiness()
    assert report["ready"] is False
    assert report["workers"]["1"] == {"ready": False, "pid": 1, "last_error": "report is stale"}
    readiness_file(tmp_path, 1).write_text(json.dumps({"ready": False, "pid": 1}))
    assert served.readiness()["ready"] is False
