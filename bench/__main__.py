"""`python -m bench` (`make bench`): piigate beside its baselines, same load, one run.

    .venv/bin/python -m bench [--duration 7] [--inflight 1,16,64] [--repeat-share 0.5]
                              [--servers echo,direct-vault,strong,piigate,...]
                              [--batch-inflight 16] [--quick] [--load h2client]
                              [--loop uvloop] [--profile] [--no-pin] ...

1. Starts the local vault and the dev issuer (own processes, loopback, port 0), migrates
   `--users` people into the vault, mints their access tokens for both demo profiles
   (`smart_on_fhir`: user_id raw; `support`: ssn and email masked by the vault) and one
   client-credentials token per calling service.
2. For each row (`bench.servers`: the echo ceilings, the direct vault call, the naive and
   strong references, piigate and its variants; bench/README.md lists them), its server
   started as its own process on CPU 0 (the vault, the issuer, the delay proxy and the
   load generator share CPU 1), checks real answers, then runs its loads (`bench.runs`):
   warm-up, a measured phase bounded by `--duration` and `--max-calls`.
3. Prints the table, the comparison table, piigate's ratios and the stage breakdown of a
   lone call, and writes the same as JSON to bench/results/<UTC timestamp>.json. With
   `--profile` it then samples piigate with py-spy under load (outside the measured runs)
   and prints where the time goes.

Every process is on 127.0.0.1; every loop is bounded in count and time; everything this
starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import grpc

from bench import load, report, servers, stages
from bench.runs import run_server
from bench.stack import HELPER_CPU, pin, start_stack
from bench.workload import build_workload

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    add = parser.add_argument
    # 7 s + 1.5 s per run: the default set (41 runs, 14 servers) takes about 6-7 minutes.
    add("--duration", type=float, default=7.0, help="seconds measured per run (default 7)")
    add("--warmup", type=float, default=1.5, help="seconds of warm-up before each run")
    add("--inflight", default="1,16,64", help="calls in flight, comma-separated")
    add("--batch-inflight", default="16",
        help="calls in flight for the piigate-batchN rows, comma-separated")  # fmt: skip
    add("--connections", type=int, default=4, help="HTTP/2 connections the calls spread over")
    add("--max-calls", type=int, default=100_000, help="call cap per run")
    add(
        "--repeat-share",
        type=float,
        default=0.5,
        help="share of calls presenting a subject token already presented in the run",
    )
    add(
        "--support-share",
        type=float,
        default=0.5,
        help="share of calls by the support caller (masked), the rest smart_on_fhir (raw)",
    )
    add("--servers", default=",".join(servers.SERVERS), help="which servers, comma-separated")
    add("--users", type=int, default=2000, help="people migrated into the vault")
    add(
        "--fresh-per-level",
        type=int,
        # enough for the asked repeat share to hold at ~5,000 calls/s over a run and its
        # warm-up; with fewer, a fast server runs out of fresh tokens and repeats more
        default=24_000,
        help="distinct subject tokens minted per in-flight level",
    )
    add("--load", choices=("h2client", "h2load"), default="h2client", help="load generator")
    add(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of echo and reference; keep it piigate's (server.event_loop, "
        "uvloop by default)",
    )
    add("--profile", action="store_true", help="py-spy piigate under load after the runs")
    add("--profile-inflight", type=int, default=16, help="calls in flight while profiling")
    add("--profile-native", action="store_true",
        help="--profile with py-spy --native (grpc C, GIL and lock waits), then perf")  # fmt: skip
    add("--piigate-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a piigate config value (TOML), e.g. vault.coalesce_wait_us=0")  # fmt: skip
    add("--no-pin", action="store_true", help="do not pin processes to CPUs")
    add("--seed", type=int, default=7)
    add("--results", type=Path, default=RESULTS, help="folder for the JSON result")
    add("--quick", action="store_true", help="smoke run: short runs, few users and tokens")
    args = parser.parse_args(argv)
    args.profile = args.profile or args.profile_native
    if args.quick:
        args.duration, args.warmup = min(args.duration, 1.0), min(args.warmup, 0.3)
        args.users, args.fresh_per_level = min(args.users, 100), min(args.fresh_per_level, 300)
        if "--inflight" not in (argv if argv is not None else sys.argv):
            args.inflight = "1,16"
    try:
        args.inflight_levels = [int(n) for n in args.inflight.split(",")]
        args.batch_inflight_levels = [int(n) for n in args.batch_inflight.split(",")]
    except ValueError:
        parser.error("--inflight and --batch-inflight: comma-separated integers")
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    problems = [
        "--duration must be in (0, 60]" if not 0 < args.duration <= 60 else "",
        "--warmup must be in [0, 30]" if not 0 <= args.warmup <= 30 else "",
        "--inflight levels must be 1..256" if not all(1 <= n <= 256 for n in args.inflight_levels)
        else "",
        "--batch-inflight levels must be 1..256"
        if not all(1 <= n <= 256 for n in args.batch_inflight_levels) else "",
        "--connections must be 1..64" if not 1 <= args.connections <= 64 else "",
        "--profile-inflight must be 1..256" if not 1 <= args.profile_inflight <= 256 else "",
        "--max-calls must be 1..1000000" if not 1 <= args.max_calls <= 1_000_000 else "",
        "--repeat-share must be in [0, 1]" if not 0 <= args.repeat_share <= 1 else "",
        "--support-share must be in [0, 1]" if not 0 <= args.support_share <= 1 else "",
        "--users must be 1..20000" if not 1 <= args.users <= 20_000 else "",
        "--fresh-per-level must be 1..50000" if not 1 <= args.fresh_per_level <= 50_000 else "",
        f"--servers: choose from {servers.SERVERS + servers.OPTIONAL_SERVERS}"
        if not args.server_list
        or set(args.server_list) - set(servers.SERVERS + servers.OPTIONAL_SERVERS) else "",
    ]  # fmt: skip
    if args.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append("--loop uvloop: uvloop is not installed (pip install uvloop)")
    if any(problems):
        parser.error("; ".join(p for p in problems if p))
    return args


def drop_unavailable(args: argparse.Namespace) -> list[str]:
    """Servers this environment cannot run, removed with a note rather than a crash."""
    if "reference" in args.server_list and importlib.util.find_spec("httpx") is None:
        args.server_list.remove("reference")
        return ["reference gateway skipped: httpx is not installed (the bench extra)"]
    return []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.load == "h2load" and load.h2load_path() is None:
        print("h2load not found (Debian: apt-get install nghttp2-client); "
              "using the built-in HTTP/2 generator instead", file=sys.stderr)  # fmt: skip
        args.load = "h2client"
    if not args.no_pin:
        pin(os.getpid(), HELPER_CPU)  # this process only waits, on the helpers' core
    began = time.monotonic()
    rows: list[report.Row] = []
    stage_runs: dict[str, list[dict[str, object]]] = {}
    notes = drop_unavailable(args)
    failures: list[str] = []
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="piigate-bench-") as tmp:
        stack = start_stack(Path(tmp), pin_cpus=not args.no_pin)
        try:
            print(f"seeding {args.users} users and minting tokens ...", flush=True)
            workload = asyncio.run(build_workload(stack, args))
            distinct = sum(len(p) for p in workload.pools.values())
            print(f"  {distinct:,} distinct subject tokens, {len(workload.callers)} callers "
                  f"({time.monotonic() - began:.0f} s)", flush=True)  # fmt: skip
            for kind in args.server_list:
                try:
                    found = run_server(kind, stack, workload, args)
                except RuntimeError as exc:  # one broken server must not lose the others
                    failures.append(f"{kind}: {exc}")
                    print(f"  {kind} FAILED: {exc}", file=sys.stderr, flush=True)
                    continue
                rows += found.rows
                notes += found.notes
                stage_runs.update(found.stages)
        finally:
            stack.stop()
    # A benchmark of error paths measures the wrong thing: more than 1 % errors fails the run.
    # A batch's items fail inside an OK call: piigate's audit (one event per item) sees them.
    for r in rows:
        errors = r.errors if r.errors is not None else r.audited_errors
        if errors is not None and errors > 0.01 * max(r.calls, 1):
            failures.append(f"{r.server} {r.inflight}: {errors} errors in {r.calls} calls")
        elif r.batch and r.audited_errors and r.audited_errors > 0.01 * r.calls * r.batch:
            failures.append(f"{r.server} {r.inflight}: {r.audited_errors} items refused or "
                            f"failed in {r.calls} calls of {r.batch}")  # fmt: skip
    context = {
        "started": args.stamp,
        "wall_s": round(time.monotonic() - began, 1),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "grpcio": grpc.__version__, "platform": platform.platform()},
        "method": method_notes(args),
        "notes": notes,
        "failures": failures,
    }  # fmt: skip
    out = args.results / f"{args.stamp}.json"
    report.write_json(out, rows, context, stage_runs)
    print()
    print(report.table(rows))
    print()
    compared = report.comparison_table(rows)
    if compared:
        print(compared)
        print()
    print("\n".join(report.ratio_lines(rows)))
    if stage_runs:
        print("\nWhere a lone call's time goes (bench.stages; p50 per stage, so the parts "
              "need not add up to the total):")
        print(stages.table(stage_runs))
    seen: dict[str, list[str]] = {}
    for row in rows:
        for note in row.notes:
            seen.setdefault(note, []).append(f"{row.server} {row.inflight}")
    for note, where in seen.items():
        print(f"note ({', '.join(where)}): {note}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"\n{len(rows)} runs in {time.monotonic() - began:.0f} s; results in {out}")
    return 1 if failures else 0


def method_notes(args: argparse.Namespace) -> list[str]:
    notes = [
        f"load: {args.load}; {args.connections} HTTP/2 connections at most; closed loop",
        "pinned: server on CPU 0; vault, issuer, generator on CPU 1" if not args.no_pin
        else "not pinned",
        f"echo and reference loop: {args.loop}; piigate: server.event_loop (uvloop unless set)",
        f"tokens: {args.fresh_per_level} fresh per level; asked repeat share "
        f"{args.repeat_share}; support share {args.support_share}",
    ]  # fmt: skip
    if args.piigate_set:
        notes.append(f"piigate config overrides: {', '.join(args.piigate_set)}")
    if args.load == "h2load":
        notes.append("h2load: one token per connection, gRPC errors invisible to it")
    return notes


if __name__ == "__main__":
    sys.exit(main())
