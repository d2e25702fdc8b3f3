"""One server's runs: start it, check it, measure each level, profile it if asked.

CPU (from /proc) and the vault's and piigate's logs are read when the generator says its
measured phase starts and again when it ends, so warm-up is never counted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench import load, profile, report, servers, traffic
from bench.stack import HELPER_CPU, Child, Stack, cpu_seconds
from bench.workload import Workload, load_spec

PREFLIGHT_CALLS = 8


def measure(
    kind: str, server: Child, stack: Stack, workload: Workload, inflight: int,
    args: argparse.Namespace, on_measuring: Callable[[], None] | None = None,
    level: str | None = None,
) -> report.Row:  # fmt: skip
    """One run against a started server; CPU and logs are read around the measured phase."""
    spec = load_spec(server.address, level or str(inflight), inflight, workload, args)
    vault_log = servers.vault_detokenize_calls(stack.vault_audit)
    audit = servers.piigate_outcomes(stack.work / servers.PIIGATE_AUDIT)
    before: dict[str, float] = {}

    def measuring() -> None:
        before["server"] = cpu_seconds(server.pid)
        before["vault"] = cpu_seconds(stack.vault.pid)
        vault_log.mark()
        audit.mark()
        if on_measuring is not None:
            on_measuring()

    run = load.run_h2load if args.load == "h2load" else load.run_generator
    result = run(spec, stack.work, measuring, None if args.no_pin else HELPER_CPU)
    server_cpu = cpu_seconds(server.pid) - before.get("server", 0.0)
    vault_cpu = cpu_seconds(stack.vault.pid) - before.get("vault", 0.0)
    outcomes = audit.since_mark() if kind.startswith("piigate") else None
    sent = result.sent if args.load == "h2client" else result.calls
    row = report.Row(
        server=kind, inflight=inflight, rate=result.rate,
        p50_ms=result.p50_ms, p90_ms=result.p90_ms, p99_ms=result.p99_ms, max_ms=result.max_ms,
        calls=result.calls, ok=result.ok,
        errors=result.errors if result.errors_seen_by_generator else None,
        elapsed_s=result.elapsed_s, server_cpu_s=server_cpu, vault_cpu_s=vault_cpu,
        generator_cpu_s=result.generator_cpu_s,
        vault_calls=sum(vault_log.since_mark().values()),
        repeat_share=traffic.achieved_repeat_share(spec.sequence, sent)
        if args.load == "h2client" else 1 - len(spec.per_connection) / max(result.calls, 1),
        audited_errors=None if outcomes is None else outcomes["denied"] + outcomes["failed"],
        notes=list(result.notes),
    )  # fmt: skip
    if row.helper_core_busy:
        row.notes.append("CPU 1 (vault + generator) was nearly saturated: may understate")
    return row


def run_server(
    kind: str, stack: Stack, workload: Workload, args: argparse.Namespace
) -> tuple[list[report.Row], list[str]]:
    """Start one server, check it, measure every level (and profile piigate if asked)."""
    rows: list[report.Row] = []
    notes: list[str] = []
    server = servers.start_server(
        kind, stack, loop=args.loop, pin_cpus=not args.no_pin, piigate_settings=args.piigate_set
    )
    try:
        problems = servers.preflight(
            kind, server.address, workload.callers, workload.warm[:PREFLIGHT_CALLS]
        )
        if problems:
            raise RuntimeError(f"{kind} answered wrongly before any load: {problems[:3]}")
        for inflight in args.inflight_levels:
            row = measure(kind, server, stack, workload, inflight, args)
            rows.append(row)
            print(f"  {kind:<9} {inflight:>3} in flight: {row.rate:8,.0f} req/s  "
                  f"p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:6.2f} ms  errors {row.errors}",
                  flush=True)  # fmt: skip
        if kind == "piigate" and args.profile:
            notes += profile_piigate(server, stack, workload, args)
    finally:
        server.stop()
    return rows, notes


def profile_piigate(
    server: Child, stack: Stack, workload: Workload, args: argparse.Namespace
) -> list[str]:
    """Sample piigate with py-spy during one more run (not in the table): py-spy pauses the
    process for each sample, so it would distort a measured run."""
    spy = profile.PySpy.find()
    if spy is None:
        return ["--profile: py-spy not found (pip install py-spy); skipped"]
    out = args.results / f"{args.stamp}-piigate-profile.txt"
    sampler: list[profile.Recording] = []
    measure(
        "piigate", server, stack, workload, args.profile_inflight, args, level="profile",
        on_measuring=lambda: sampler.append(spy.record(server.pid, args.duration, out)),
    )  # fmt: skip
    if not sampler:
        return ["--profile: the profiled run never started measuring"]
    stacks = sampler[0].wait()
    summary = profile.summarize(stacks)
    print(f"\nWhere piigate's time goes (py-spy, {args.profile_inflight} in flight):")
    print("\n".join(summary))
    return [f"profile: {out}", *summary]
