"""One row per (server, calls in flight), the printed table, the ratios, the JSON file.

CPU is per process, from /proc/<pid>/stat (user + system, all threads) read when the
measured phase starts and ends, shown as µs per call and as a share of one core. Vault
calls per gateway call come from the vault's audit log (one line per detokenize HTTP
call). Errors are non-OK gRPC outcomes seen by the generator; for piigate the count from
its own audit trail (denied + failed) is shown beside it as a cross-check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Above this share of one core, the vault and the generator (which share CPU 1) may be
# what limits the run rather than the server on CPU 0.
HELPER_CORE_BUSY = 0.85


@dataclass
class Row:
    """What one measured run found."""

    server: str
    inflight: int
    rate: float  # completed calls per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    calls: int
    ok: int
    errors: int | None  # None: the generator cannot see gRPC errors (h2load)
    elapsed_s: float
    server_cpu_s: float
    vault_cpu_s: float
    generator_cpu_s: float
    vault_calls: int
    repeat_share: float  # achieved: share of calls whose token was presented before
    audited_errors: int | None = None  # piigate's audit: denied + failed
    notes: list[str] = field(default_factory=list)

    def per_call_us(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1e6 if self.calls else math.nan

    def core_share(self, cpu_s: float) -> float:
        return cpu_s / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def vault_calls_per_call(self) -> float:
        return self.vault_calls / self.calls if self.calls else math.nan

    @property
    def helper_core_busy(self) -> bool:
        return self.core_share(self.vault_cpu_s + self.generator_cpu_s) > HELPER_CORE_BUSY


_HEADER = (
    "server", "in flight", "req/s", "p50 ms", "p99 ms", "server CPU µs/call (core)",
    "vault CPU µs/call (core)", "vault calls/call", "errors", "repeat",
)  # fmt: skip


def _cells(row: Row) -> tuple[str, ...]:
    errors = "n/a" if row.errors is None else f"{row.errors}"
    if row.audited_errors is not None:
        errors += f" (audit {row.audited_errors})"
    vault = (
        "-"
        if not row.vault_calls
        else (f"{row.per_call_us(row.vault_cpu_s):.0f} ({row.core_share(row.vault_cpu_s):.0%})")
    )
    return (
        row.server,
        str(row.inflight),
        f"{row.rate:,.0f}",
        f"{row.p50_ms:.2f}",
        f"{row.p99_ms:.2f}",
        f"{row.per_call_us(row.server_cpu_s):.0f} ({row.core_share(row.server_cpu_s):.0%})",
        vault,
        f"{row.vault_calls_per_call:.2f}",
        errors,
        f"{row.repeat_share:.0%}",
    )


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text too)."""
    lines = [_HEADER, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEADER))]

    def render(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


BASELINES = ("echo", "echo-threads", "reference")


def ratios(rows: Sequence[Row]) -> dict[int, dict[str, float]]:
    """piigate's throughput and p50 against each echo and the reference, per calls in
    flight."""
    by = {(r.server, r.inflight): r for r in rows}
    out: dict[int, dict[str, float]] = {}
    for (server, inflight), row in by.items():
        if server != "piigate":
            continue
        for other in BASELINES:
            base = by.get((other, inflight))
            if base is None or not base.rate:
                continue
            out.setdefault(inflight, {})[f"rate_vs_{other}"] = row.rate / base.rate
            p50 = row.p50_ms / base.p50_ms if base.p50_ms else math.nan
            out[inflight][f"p50_vs_{other}"] = p50
    return out


def ratio_lines(rows: Sequence[Row]) -> list[str]:
    lines = []
    for inflight, found in sorted(ratios(rows).items()):
        parts = [
            f"piigate/{other} {found[f'rate_vs_{other}']:.2f}x req/s, "
            f"{found[f'p50_vs_{other}']:.2f}x p50"
            for other in BASELINES
            if f"rate_vs_{other}" in found
        ]
        lines.append(f"{inflight:>3} in flight: " + "; ".join(parts))
    return lines


def write_json(path: Path, rows: Sequence[Row], context: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        **context,
        "rows": [
            {
                **asdict(r),
                "server_cpu_us_per_call": r.per_call_us(r.server_cpu_s),
                "server_core_share": r.core_share(r.server_cpu_s),
                "vault_cpu_us_per_call": r.per_call_us(r.vault_cpu_s),
                "vault_core_share": r.core_share(r.vault_cpu_s),
                "generator_core_share": r.core_share(r.generator_cpu_s),
                "vault_calls_per_call": r.vault_calls_per_call,
            }
            for r in rows
        ],
        "ratios": {str(k): v for k, v in ratios(rows).items()},
    }
    path.write_text(json.dumps(_no_nan(data), indent=2, allow_nan=False) + "\n")


def _no_nan(value: Any) -> Any:
    """JSON has no NaN: an undefined figure (no calls, no baseline) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value
