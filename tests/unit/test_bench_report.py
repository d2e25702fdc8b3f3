"""The benchmark's table, ratios and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.report import Row, ratios, table, write_json


def row(server: str, inflight: int, rate: float, p50: float, **extra: object) -> Row:
    fields: dict[str, object] = {
        "server": server, "inflight": inflight, "rate": rate, "p50_ms": p50, "p90_ms": p50,
        "p99_ms": p50 * 2, "max_ms": p50 * 3, "calls": int(rate * 10), "ok": int(rate * 10),
        "errors": 0, "elapsed_s": 10.0, "server_cpu_s": 5.0, "vault_cpu_s": 1.0,
        "generator_cpu_s": 1.0, "vault_calls": int(rate * 10), "repeat_share": 0.5,
    }  # fmt: skip
    fields.update(extra)
    return Row(**fields)  # type: ignore[arg-type]


def test_ratios_compare_piigate_with_each_baseline_per_level() -> None:
    rows = [row("echo", 16, 4000, 4.0), row("reference", 16, 500, 32.0),
            row("piigate", 16, 1000, 16.0), row("piigate", 64, 900, 70.0)]  # fmt: skip
    found = ratios(rows)
    assert found[16] == {
        "rate_vs_echo": 0.25, "p50_vs_echo": 4.0, "rate_vs_reference": 2.0, "p50_vs_reference": 0.5
    }  # fmt: skip
    assert 64 not in found  # no baseline at 64: no ratio


def test_the_table_shows_cpu_per_call_and_share_of_a_core() -> None:
    text = table([row("piigate", 16, 1000, 16.0, audited_errors=0)])
    header, rule, line = text.splitlines()
    assert "server CPU µs/call (core)" in header
    assert set(rule) <= {"|", "-"}
    assert "| piigate |" in line
    assert "500 (50%)" in line  # 5 s of CPU over 10,000 calls in 10 s
    assert "0 (audit 0)" in line


def test_json_has_no_nan(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    write_json(out, [row("echo", 1, 0.0, math.nan, calls=0, ok=0)], {"started": "now"})
    data = json.loads(out.read_text())
    assert data["rows"][0]["p50_ms"] is None
    assert data["rows"][0]["server_cpu_us_per_call"] is None
    assert data["started"] == "now"
