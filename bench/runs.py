"""One row kind's runs: start its server, check it, measure each level, profile if asked.

CPU (from /proc) and the vault's and piigate's logs are read when the generator says its
measured phase starts and again when it ends, so warm-up is never counted.

Which runs a kind gets (`plan`): every level of `--inflight` with the level's planned
tokens, except
- `piigate-miss`: every call a never-seen subject token (each level's pool in order);
- `piigate-batchN`: BatchDetokenize of N tokens, at each `--batch-inflight` level;
- `piigate-stages*`: 1 in flight, twice: `cached` (every subject token one the warm-up
  presented) and `fresh` (every one new), then the stage breakdown of each;
- `direct-vault*`: no server; `bench.vault_direct` sends piigate's vault request to the
  vault (or the delay proxy) with the same tokens as the gateways get.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import load, profile, report, servers, stages, traffic, vault_direct
from bench.stack import HELPER_CPU, SERVER_CPU, Child, Stack, SubjectToken, cpu_seconds
from bench.workload import (
    Workload,
    all_fresh,
    all_warm,
    batch_spec,
    load_spec,
    spec_tokens,
)

PREFLIGHT_CALLS = 8


@dataclass
class Found:
    """What one row kind's runs produced."""

    rows: list[report.Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run -> summary


@dataclass
class Run:
    """One measured run of a kind: its row label, calls in flight, and its load."""

    label: str
    inflight: int
    spec: load.LoadSpec | vault_direct.DirectSpec


def measure(
    kind: str, run: Run, server: Child | None, stack: Stack, args: argparse.Namespace,
    on_measuring: Callable[[], None] | None = None,
) -> tuple[report.Row, tuple[float, float]]:  # fmt: skip
    """One run; CPU and logs are read around the measured phase, whose monotonic window
    is returned beside the row."""
    spec = run.spec
    vault_log = servers.vault_detokenize_calls(stack.vault_audit)
    audit = servers.piigate_outcomes(stack.work / servers.PIIGATE_AUDIT)
    before: dict[str, float] = {}
    proxy = stack.proxy

    def measuring() -> None:
        before["at"] = time.monotonic()
        before["server"] = cpu_seconds(server.pid) if server is not None else 0.0
        before["vault"] = cpu_seconds(stack.vault.pid)
        before["proxy"] = cpu_seconds(proxy.pid) if proxy is not None else 0.0
        vault_log.mark()
        audit.mark()
        if on_measuring is not None:
            on_measuring()

    # direct-vault-apart: the generator where a gateway would be (servers.DIRECT).
    cpu = None if args.no_pin else SERVER_CPU if kind == "direct-vault-apart" else HELPER_CPU
    if isinstance(spec, vault_direct.DirectSpec):
        result = load.run_generator(spec, stack.work, measuring, cpu, "bench.vault_direct")
    elif args.load == "h2load" and not spec.batch:
        result = load.run_h2load(spec, stack.work, measuring, cpu)
    else:
        result = load.run_generator(spec, stack.work, measuring, cpu)
    window = (before.get("at", time.monotonic()), time.monotonic())
    server_cpu = cpu_seconds(server.pid) - before.get("server", 0.0) if server else 0.0
    vault_cpu = cpu_seconds(stack.vault.pid) - before.get("vault", 0.0)
    proxy_cpu = cpu_seconds(proxy.pid) - before.get("proxy", 0.0) if proxy is not None else 0.0
    outcomes = audit.since_mark() if kind.startswith("piigate") else None
    h2load = args.load == "h2load" and isinstance(spec, load.LoadSpec) and not spec.batch
    sent = result.calls if h2load else result.sent
    row = report.Row(
        server=run.label, inflight=run.inflight, rate=result.rate,
        p50_ms=result.p50_ms, p90_ms=result.p90_ms, p99_ms=result.p99_ms, max_ms=result.max_ms,
        calls=result.calls, ok=result.ok,
        errors=result.errors if result.errors_seen_by_generator else None,
        elapsed_s=result.elapsed_s, server_cpu_s=server_cpu, vault_cpu_s=vault_cpu,
        generator_cpu_s=result.generator_cpu_s,
        vault_calls=sum(vault_log.since_mark().values()),
        repeat_share=1 - len(spec.per_connection) / max(result.calls, 1)
        if h2load and isinstance(spec, load.LoadSpec)
        else traffic.achieved_repeat_share(spec.sequence, sent),
        audited_errors=None if outcomes is None else outcomes["denied"] + outcomes["failed"],
        notes=list(result.notes),
        batch=spec.batch if isinstance(spec, load.LoadSpec) else 0,
        proxy_cpu_s=proxy_cpu, no_server=server is None,
    )  # fmt: skip
    if row.helper_core_busy:
        row.notes.append("CPU 1 (vault + generator) was nearly saturated: may understate")
    return row, window


def plan(kind: str, address: str, workload: Workload, args: argparse.Namespace) -> list[Run]:
    """The runs of one kind (see the module docstring)."""
    levels = args.inflight_levels
    if kind == "piigate-miss":
        return [Run(kind, n, load_spec(address, str(n), n, workload, args,
                                       all_fresh(workload, str(n), args.max_calls)))
                for n in levels]  # fmt: skip
    if kind.startswith("piigate-batch"):
        size = servers.batch_size(kind)
        return [Run(kind, n, batch_spec(address, str(n), n, workload, args, size)[0])
                for n in args.batch_inflight_levels]  # fmt: skip
    if kind.startswith("piigate-stages"):
        return [
            Run(f"{kind}:cached", 1,
                load_spec(address, "1", 1, workload, args, all_warm(workload, args.max_calls))),
            Run(f"{kind}:fresh", 1,
                load_spec(address, "1", 1, workload, args,
                          all_fresh(workload, "1", args.max_calls))),
        ]  # fmt: skip
    return [Run(kind, n, load_spec(address, str(n), n, workload, args)) for n in levels]


def run_server(
    kind: str, stack: Stack, workload: Workload, args: argparse.Namespace
) -> Found:
    """Start one kind's server, check it, measure every run (and profile piigate if asked)."""
    if kind in servers.DIRECT:
        return run_direct(kind, stack, workload, args)
    found = Found()
    server = servers.start_server(
        kind, stack, loop=args.loop, pin_cpus=not args.no_pin, piigate_settings=args.piigate_set
    )
    windows: dict[str, tuple[float, float, float]] = {}
    try:
        check(kind, server.address, workload, args)
        for run in plan(kind, server.address, workload, args):
            row, (since, until) = measure(kind, run, server, stack, args)
            found.rows.append(row)
            windows[run.label] = (since, until, row.p50_ms)
            _show(row)
        if kind == "piigate" and args.profile:
            found.notes += profile_piigate(server, stack, workload, args)
    finally:
        server.stop()
    if kind.startswith("piigate-stages"):
        found.stages = stage_breakdown(stack, windows)
    return found


def check(kind: str, address: str, workload: Workload, args: argparse.Namespace) -> None:
    """The preflight: real answers, checked, before any load (a batch kind: a batch of its
    size per caller)."""
    if kind.startswith("piigate-batch"):
        _, groups = batch_spec(address, str(args.batch_inflight_levels[0]),
                               args.batch_inflight_levels[0], workload, args,
                               servers.batch_size(kind))  # fmt: skip
        problems = servers.preflight_batch(address, workload.callers, groups)
    else:
        problems = servers.preflight(
            kind, address, workload.callers, workload.warm[:PREFLIGHT_CALLS]
        )
    if problems:
        raise RuntimeError(f"{kind} answered wrongly before any load: {problems[:3]}")


def direct_runs(
    kind: str, stack: Stack, workload: Workload, args: argparse.Namespace
) -> tuple[list[Run], str, list[str], list[SubjectToken]]:
    """The direct-vault runs (same tokens, same sequences as the gateways' runs), the
    target, and the warm-up requests and tokens for the preflight."""
    keys = {"fhir-app": stack.secrets.vault_fhir, "support-tool": stack.secrets.vault_support}
    templates = asyncio.run(vault_direct.capture_templates(keys))
    url = stack.delay_proxy_url() if kind == "direct-vault-remote" else stack.vault_url
    target = url.removeprefix("http://").rstrip("/")
    runs = []
    for n in args.inflight_levels:
        level = str(n)
        tokens = spec_tokens(workload, level)
        requests = vault_direct.requests_for(templates, tokens, stack.token_ids, target)
        spec = load_spec(target, level, n, workload, args)
        runs.append(Run(kind, n, vault_direct.DirectSpec(
            target=target, connections=n, duration_s=args.duration, warmup_s=args.warmup,
            requests=requests, warmup=spec.warmup, sequence=spec.sequence,
        )))  # fmt: skip
    warm = workload.warm[:PREFLIGHT_CALLS]
    return runs, target, vault_direct.requests_for(templates, warm, stack.token_ids, target), warm


def run_direct(kind: str, stack: Stack, workload: Workload, args: argparse.Namespace) -> Found:
    """The direct-vault rows: no server, the generator asks the vault itself."""
    runs, target, requests, warm = direct_runs(kind, stack, workload, args)
    problems = vault_direct.preflight(target, requests, warm)
    if problems:
        raise RuntimeError(f"{kind} answered wrongly before any load: {problems[:3]}")
    found = Found()
    for run in runs:
        row, _ = measure(kind, run, None, stack, args)
        found.rows.append(row)
        _show(row)
    return found


def stage_breakdown(
    stack: Stack, windows: dict[str, tuple[float, float, float]]
) -> dict[str, list[dict[str, Any]]]:
    """Each stage run's summary, from the records `bench.stages` wrote as it stopped."""
    path = stack.work / servers.STAGES_RECORDS
    if not path.exists():
        raise RuntimeError("the stage-timed server wrote no records (see its stderr)")
    out = {}
    for label, (since, until, p50_ms) in windows.items():
        records, missing = stages.read_records(path, since, until)
        out[label] = stages.summarize(records, missing, p50_ms)
    return out


def _show(row: report.Row) -> None:
    print(f"  {row.server:<9} {row.inflight:>3} in flight: {row.rate:8,.0f} req/s  "
          f"p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:6.2f} ms  errors {row.errors}",
          flush=True)  # fmt: skip


def profile_piigate(
    server: Child, stack: Stack, workload: Workload, args: argparse.Namespace
) -> list[str]:
    """Sample piigate with py-spy during one more run (not in the table): py-spy pauses the
    process for each sample, so it would distort a measured run."""
    spy = profile.PySpy.find(native=args.profile_native)
    if spy is None:
        return ["--profile: py-spy not found (pip install py-spy); skipped"]
    out = args.results / f"{args.stamp}-piigate-profile.txt"
    sampler: list[profile.Recording] = []
    n = args.profile_inflight
    run = Run("piigate", n, load_spec(server.address, "profile", n, workload, args))
    row, _ = measure(
        "piigate", run, server, stack, args,
        on_measuring=lambda: sampler.append(spy.record(
            server.pid, args.duration, out, profile.LineCount(stack.work / servers.PIIGATE_AUDIT))),
    )  # fmt: skip
    if not sampler:
        return ["--profile: the profiled run never started measuring"]
    stacks = sampler[0].wait()
    summary = sampler[0].summarize(stacks, row.per_call_us(row.server_cpu_s))
    print(f"\nWhere piigate's time goes (py-spy, {args.profile_inflight} in flight):")
    print("\n".join(summary))
    return [f"profile: {out}", *summary]
