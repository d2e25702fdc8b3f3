"""The Prometheus alert rules `deploy/prometheus/piigate-rules.yaml`: each rule names only
series the gateway exports (read from the registry its own code builds; `up` is the one
series Prometheus makes itself), has a severity, a summary and a description, and the
brief's alerts are all there. With `promtool` installed (`make test` installs Debian's
prometheus package, which ships it) the file passes `promtool check rules` and the unit
tests beside it (`piigate-rules.test.yaml`: the alerts fire, and stay quiet, as meant)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.exported_metrics import exported_sample_names, metric_names

RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = RULES_DIR / "piigate-rules.yaml"
RULE_TESTS = RULES_DIR / "piigate-rules.test.yaml"
PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (`make test` installs Debian's "
    "prometheus package, which ships it)")
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every scrape target


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_rule_reads_series_the_gateway_exports(
        rules: list[dict[str, Any]], tmp_path: Path) -> None:
    exported = exported_sample_names(tmp_path) | PROMETHEUS_OWN
    unknown = {(rule["alert"], name) for rule in rules for name in metric_names(rule["expr"])
               if name not in exported}
    assert unknown == set()
    assert all(metric_names(rule["expr"]) for rule in rules)


def test_every_rule_says_how_bad_and_what_happened(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        assert rule["alert"].startswith("Piigate"), rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        assert "for" in rule, rule["alert"]  # no alert on a single bad scrape
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))


def test_the_rules_cover_what_an_operator_is_paged_for(rules: list[dict[str, Any]]) -> None:
    watched = {name for rule in rules for name in metric_names(rule["expr"])}
    assert {
        "up",  # down, and not scraped at all
        "piigate_decisions_total",  # error ratio
        "piigate_decision_duration_seconds_bucket",  # p99 latency
        "piigate_vault_request_duration_seconds_count",  # vault errors
        "piigate_jwks_ready", "piigate_jwks_stale",  # keys unavailable, stale
        "piigate_audit_ready", "piigate_audit_fsync_duration_seconds_bucket",
        "piigate_state_ready",
    } <= watched


@NEEDS_PROMTOOL
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@NEEDS_PROMTOOL
def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    assert PROMTOOL is not None
    tested = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], capture_output=True,
                            text=True, timeout=120, check=False, cwd=RULES_DIR)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
