"""The Grafana dashboard `deploy/grafana/piigate.json`: every PromQL expression in it
(panel targets and template variables) names only series the gateway exports, read from
the registry the gateway's own code builds; every expression parses (`promtool`, when
installed: `make test` installs it); and the layout holds together (rows, units, no
panel overlapping another, one data-source variable)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.exported_metrics import (
    exported_sample_names,
    metric_names,
    without_grafana_variables,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "piigate.json"
LABEL_VALUES = re.compile(r"label_values\((?P<expr>.*),\s*\w+\)\s*$")
PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return exported_sample_names(tmp_path_factory.mktemp("gateway"))


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match is not None, variable["name"]
            found.append(match["expr"])
    return found


def test_every_metric_the_dashboard_reads_is_exported(dashboard: dict[str, Any],
                                                      exported: set[str]) -> None:
    unknown = {(name, expr) for expr in expressions(dashboard)
               for name in metric_names(expr) if name not in exported}
    assert unknown == set()
    used = {name for expr in expressions(dashboard) for name in metric_names(expr)}
    # Every histogram the gateway keeps has a panel, and so do the load gauges.
    histograms = {n.removesuffix("_bucket") for n in exported if n.endswith("_bucket")}
    assert {h for h in histograms if not any(u.startswith(h) for u in used)} == set()
    assert {"piigate_calls_in_flight", "piigate_calls_queued"} <= used


def test_every_expression_reads_a_metric(dashboard: dict[str, Any]) -> None:
    assert all(metric_names(expr) for expr in expressions(dashboard))


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (`make test` "
                    "installs Debian's prometheus package, which ships it)")
def test_every_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    # promtool parses rule files: each expression becomes a recording rule.
    rules = [{"record": f"dashboard:expression_{i}", "expr": without_grafana_variables(e)}
             for i, e in enumerate(expressions(dashboard))]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    checked = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_the_metric_reader_finds_names_and_skips_the_rest() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, method) (rate(a_bucket{job=~"x", '
            'le!="+Inf"}[5m]))) / on(job) group_left(version) b_info offset 5m > 1e-9 '
            'and absent(c{d="e"})')
    assert metric_names(expr) == {"a_bucket", "b_info", "c"}


def test_the_layout_holds_together(dashboard: dict[str, Any]) -> None:
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows][:2] == ["Overview", "Traffic"]
    assert len(rows) >= 6
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"job", "instance", "profile"} <= set(variables)
