"""Each of the benchmark's newer rows, once, briefly: its server started as `make bench`
starts it, its preflight (real answers, checked), and a fraction of a second of load, on
the bench's own stack (local vault and dev issuer as child processes, loopback, port 0).

Covered here: direct-vault and direct-vault-remote (piigate's captured vault request, the
delay proxy), strong and strong-cached, piigate-stages (its stage records and breakdown),
piigate-miss, piigate-batch1/10/100 (the batch preflight and BatchDetokenize load) and
piigate-remote. Not started: piigate-stages-fsync, which is piigate-stages with one config
setting. No timing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.__main__ import parse_args
from bench.runs import Found, run_server
from bench.servers import OPTIONAL_SERVERS, SERVERS
from bench.stack import Stack, start_stack
from bench.workload import Workload, build_workload

Bench = tuple[Stack, Workload, argparse.Namespace]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    work = tmp_path_factory.mktemp("bench")
    args = parse_args([
        "--no-pin", "--users", "6", "--fresh-per-level", "16", "--inflight", "1",
        "--batch-inflight", "2", "--duration", "0.3", "--warmup", "0.1", "--max-calls", "40",
        "--servers", ",".join(SERVERS + OPTIONAL_SERVERS), "--results", str(work / "results"),
    ])  # fmt: skip
    args.stamp = "test"
    stack = start_stack(work, pin_cpus=False)
    try:
        yield stack, asyncio.run(build_workload(stack, args)), args
    finally:
        stack.stop()


def run(kind: str, bench: Bench) -> Found:
    stack, workload, args = bench
    found = run_server(kind, stack, workload, args)  # raises if the preflight fails
    assert found.rows
    for row in found.rows:
        assert row.calls > 0, row.server
        assert row.errors == 0, row.server
        assert row.audited_errors in (None, 0), row.server
    return found


@pytest.mark.parametrize("kind", ["direct-vault", "direct-vault-apart", "direct-vault-remote"])
def test_direct_vault_rows_send_piigates_request_to_the_vault(kind: str, bench: Bench) -> None:
    (row,) = run(kind, bench).rows
    assert row.no_server
    # one detokenize per call, none coalesced; the log window may miss the calls in flight
    # at either edge (logged just before the mark, or not yet logged at the end)
    assert row.vault_calls >= row.calls - 2 * row.inflight


@pytest.mark.parametrize("kind", ["strong", "strong-cached"])
def test_the_strong_reference_answers_both_profiles(kind: str, bench: Bench) -> None:
    run(kind, bench)


@pytest.mark.parametrize("size", [1, 10, 100])
def test_batch_rows_check_every_item_and_send_batches(size: int, bench: Bench) -> None:
    (row,) = run(f"piigate-batch{size}", bench).rows
    assert row.batch == size
    assert row.inflight == 2


def test_the_cache_miss_row_presents_only_fresh_tokens(bench: Bench) -> None:
    (row,) = run("piigate-miss", bench).rows
    assert row.repeat_share == 0


def test_the_remote_vault_row_goes_through_the_delay_proxy(bench: Bench) -> None:
    stack = bench[0]
    run("piigate-remote", bench)
    assert stack.proxy is not None


def test_the_stage_breakdown_times_every_stage_of_a_lone_call(bench: Bench) -> None:
    found = run("piigate-stages", bench)
    assert set(found.stages) == {"piigate-stages:cached", "piigate-stages:fresh"}
    for label, summary in found.stages.items():
        assert not [s["note"] for s in summary if s["note"].startswith("probe missing")]
        for name in ("caller verification", "vault HTTP client", "audit: serialise",
                     "thread -> loop hand-off", "loop -> thread", "handler thread, total"):
            (stage,) = [s for s in summary if s["stage"].startswith(name)]
            assert stage["calls"] > 0, (label, name)
            assert stage["p50_us"] > 0, (label, name)
    assert Path(bench[0].work / "stages.json").exists()
