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
# At or above this share of its core the server is what limits the run (CPU-bound).
SERVER_CORE_BUSY = 0.85
# Below this share it is mostly waiting (latency-bound); in between, "mixed".
SERVER_CORE_IDLE = 0.5


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
    batch: int = 0  # tokens per call (BatchDetokenize); 0: Detokenize
    proxy_cpu_s: float = 0.0  # the delay proxy's CPU (helpers' core), remote-vault rows
    no_server: bool = False  # direct-vault rows: the generator calls the vault itself

    @property
    def tokens_per_call(self) -> int:
        return max(self.batch, 1)

    def per_call_us(self, cpu_s: float) -> float:
        return cpu_s / self.calls * 1e6 if self.calls else math.nan

    def core_share(self, cpu_s: float) -> float:
        return cpu_s / self.elapsed_s if self.elapsed_s else math.nan

    @property
    def vault_calls_per_call(self) -> float:
        return self.vault_calls / self.calls if self.calls else math.nan

    @property
    def helper_core_busy(self) -> bool:
        # direct-vault-apart's generator runs on CPU 0, not beside the vault
        generator = 0.0 if self.server == "direct-vault-apart" else self.generator_cpu_s
        helpers = self.vault_cpu_s + generator + self.proxy_cpu_s
        return self.core_share(helpers) > HELPER_CORE_BUSY

    @property
    def bound(self) -> str:
        """What limited the run, with the server's share of its core: the server's core
        (CPU), the helpers' core, waiting (latency: calls in flight over round-trip time),
        or in between (mixed)."""
        share = 0.0 if self.no_server else self.core_share(self.server_cpu_s)
        shown = "" if self.no_server else f" ({share:.0%})"
        if share >= SERVER_CORE_BUSY:
            return f"CPU{shown}"
        if self.helper_core_busy:
            return f"helpers' CPU{shown}"
        return f"{'latency' if share < SERVER_CORE_IDLE else 'mixed'}{shown}"


_HEADER = (
    "server", "in flight", "req/s", "p50 ms", "p99 ms", "server CPU µs/call (core)",
    "vault CPU µs/call (core)", "vault calls/call", "errors", "repeat",
)  # fmt: skip


def _cells(row: Row) -> tuple[str, ...]:
    errors = "n/a" if row.errors is None else f"{row.errors}"
    if row.audited_errors is not None:
        errors += f" (audit {row.audited_errors})"
    server = (
        "-" if row.no_server
        else f"{row.per_call_us(row.server_cpu_s):.0f} ({row.core_share(row.server_cpu_s):.0%})"
    )  # fmt: skip
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
        server,
        vault,
        f"{row.vault_calls_per_call:.2f}",
        errors,
        f"{row.repeat_share:.0%}",
    )


def table(rows: Sequence[Row]) -> str:
    """A Markdown table (readable as plain text too)."""
    return _render(_HEADER, [_cells(r) for r in rows])


def _render(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = [tuple(header), *(tuple(b) for b in body)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])]
        padded += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(lines[0]), rule, *(render(line) for line in lines[1:])])


BASELINES = ("echo", "echo-threads", "reference", "strong", "strong-cached")
# Rows that are baselines themselves: no comparison row of their own.
NOT_COMPARED = ("echo", "echo-threads", "direct-vault", "direct-vault-apart",
                "direct-vault-remote")
_COMPARISON_HEADER = (
    "row", "in flight", "CPU/call vs echo-threads", "req/s vs echo", "vs reference",
    "vs strong", "vs strong-cached", "p50 over direct-vault ms", "... over apart ms",
    "CPU µs/token",
    "vault calls/RPC", "bound",
)  # fmt: skip


def comparison(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per compared row: its CPU per call against the echo-threads server's, its req/s
    against each baseline's, at 1 in flight its p50 less the direct-vault row's (the
    latency it adds to a lone call; the remote rows against `direct-vault-remote`; with
    more in flight both p50s are queueing, so no difference is shown) and the
    direct-vault-apart row's (the same, its generator on the gateways' CPU), CPU per token,
    vault calls per RPC, and what bound it. Batch
    rows of more than one token are compared on CPU per token only: a call is not a call."""
    by = {(r.server, r.inflight): r for r in rows}
    out: list[dict[str, Any]] = []
    for row in rows:
        if row.server in NOT_COMPARED:
            continue
        n = row.inflight
        single = row.tokens_per_call == 1
        found: dict[str, Any] = {"server": row.server, "inflight": n}
        threads = by.get(("echo-threads", n))
        if single and threads is not None and threads.calls and threads.server_cpu_s:
            found["cpu_vs_echo_threads"] = (row.per_call_us(row.server_cpu_s)
                                            / threads.per_call_us(threads.server_cpu_s))
        for other in ("echo", "reference", "strong", "strong-cached"):
            base = by.get((other, n))
            if single and base is not None and base.rate and other != row.server:
                found[f"rate_vs_{other}"] = row.rate / base.rate
        direct = by.get(("direct-vault-remote" if "remote" in row.server else "direct-vault", n))
        if single and n == 1 and direct is not None and math.isfinite(direct.p50_ms):
            found["p50_added_ms"] = row.p50_ms - direct.p50_ms
        apart = by.get(("direct-vault-apart", n))
        if single and n == 1 and "remote" not in row.server and apart is not None \
                and math.isfinite(apart.p50_ms):  # fmt: skip
            found["p50_added_apart_ms"] = row.p50_ms - apart.p50_ms
        found["cpu_us_per_token"] = row.per_call_us(row.server_cpu_s) / row.tokens_per_call
        found["vault_calls_per_rpc"] = row.vault_calls_per_call
        found["bound"] = row.bound
        out.append(found)
    return out


def comparison_table(rows: Sequence[Row]) -> str:
    def ratio(found: dict[str, Any], key: str) -> str:
        return f"{found[key]:.2f}x" if key in found else ""

    body = []
    for f in comparison(rows):
        added = f"{f['p50_added_ms']:+.2f}" if "p50_added_ms" in f else ""
        apart = f"{f['p50_added_apart_ms']:+.2f}" if "p50_added_apart_ms" in f else ""
        body.append((
            f["server"], str(f["inflight"]), ratio(f, "cpu_vs_echo_threads"),
            ratio(f, "rate_vs_echo"), ratio(f, "rate_vs_reference"), ratio(f, "rate_vs_strong"),
            ratio(f, "rate_vs_strong-cached"), added, apart, f"{f['cpu_us_per_token']:.0f}",
            f"{f['vault_calls_per_rpc']:.2f}", f["bound"],
        ))  # fmt: skip
    return _render(_COMPARISON_HEADER, body) if body else ""


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


def write_json(
    path: Path, rows: Sequence[Row], context: dict[str, Any],
    stages: dict[str, Any] | None = None,
) -> None:  # fmt: skip
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
                "server_cpu_us_per_token": r.per_call_us(r.server_cpu_s) / r.tokens_per_call,
                "bound": r.bound,
            }
            for r in rows
        ],
        "ratios": {str(k): v for k, v in ratios(rows).items()},
        "comparison": comparison(rows),
        "stages": stages or {},
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
