"""The benchmark's new rows, pure parts: batch groups and their wire messages, the stage
breakdown's arithmetic and probes, the comparison table, the delay proxy's timing."""

from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace

import pytest

from bench import stages
from bench.delay_proxy import start_relay
from bench.load import BATCH_PATH, PATH, LoadSpec
from bench.report import Row, comparison, comparison_table
from bench.stack import SubjectToken
from bench.workload import batch_groups
from piigate_client.v1 import detokenization_pb2 as pb


def token(caller: str, n: int) -> SubjectToken:
    return SubjectToken(caller, f"t-{caller}-{n}", n)


def test_batch_groups_hold_one_caller_each_and_pad_only_when_asked() -> None:
    tokens = [token("a", 0), token("b", 1), token("a", 2), token("a", 3), token("b", 4)]
    dropped = batch_groups(tokens, 2, pad=False)
    assert [[t.user for t in g] for g in dropped] == [[0, 2], [1, 4]]  # a's 3 is left out
    padded = batch_groups(tokens, 2, pad=True)
    assert [[t.user for t in g] for g in padded] == [[0, 2], [3, 0], [1, 4]]


def test_a_batch_spec_sends_one_batch_request_per_group() -> None:
    spec = LoadSpec(target="x:1", per_connection=[1], duration_s=1, warmup_s=0, callers={},
                    tokens=[("a", "t1"), ("a", "t2"), ("b", "t3"), ("b", "t4")],
                    warmup=[0], sequence=[1], batch=2)  # fmt: skip
    assert spec.path == BATCH_PATH
    calls = spec.calls()
    assert [caller for caller, _ in calls] == ["a", "b"]
    request = pb.BatchDetokenizeRequest.FromString(calls[1][1][5:])  # past the gRPC prefix
    assert list(request.subject_tokens) == ["t3", "t4"]
    single = LoadSpec(target="x:1", per_connection=[1], duration_s=1, warmup_s=0, callers={},
                      tokens=[("a", "t1")], warmup=[0], sequence=[0])  # fmt: skip
    assert single.path == PATH
    assert pb.DetokenizeRequest.FromString(single.calls()[0][1][5:]).subject_token == "t1"


def test_stage_summary_takes_differences_per_call_and_names_missing_probes() -> None:
    records = [
        {"decision (stages 3-5)": 50_000, "subject verification": 30_000,
         "handler thread, total": 400_000},
        {"decision (stages 3-5)": 70_000, "handler thread, total": 600_000},  # cache: no verify
    ]  # fmt: skip
    rows = {r["stage"]: r for r in stages.summarize(records, ["abuse limits"], e2e_p50_ms=0.8)}
    decision = rows["decision, less verification"]
    assert decision["calls"] == 2
    assert decision["p50_us"] == pytest.approx(45.0)  # median of 20 and 70
    assert rows["subject verification"]["calls"] == 1
    assert rows["abuse limits"]["note"] == "probe missing: abuse limits"
    assert math.isnan(rows["abuse limits"]["p50_us"])
    (outside,) = [r for label, r in rows.items() if label.startswith("outside the handler")]
    assert outside["p50_us"] == pytest.approx(800 - 500)
    assert "decision, less verification" in stages.table({"cached": list(rows.values())})


def test_install_wraps_what_exists_and_reports_what_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = SimpleNamespace(work=lambda: time.sleep(0) or 7)
    monkeypatch.setattr(stages, "_resolve", lambda t: (target, "work") if t == "here" else None)
    monkeypatch.setattr(stages, "PROBES", (("a", "here", "sync"), ("b", "gone", "sync")))
    assert stages.install() == ["b"]
    record: stages.Record = {}
    token = stages._current.set(record)
    try:
        assert target.work() == 7
    finally:
        stages._current.reset(token)
    assert record["a"] >= 0


def test_every_probe_names_a_real_target() -> None:
    """The breakdown measures piigate's code as it is: a stage whose method moved would
    silently drop out of the table, so a moved method fails here."""
    assert [stage for stage, target, _ in stages.PROBES if stages._resolve(target) is None] == []


def row(server: str, inflight: int, rate: float, p50: float, cpu_s: float, **extra: object) -> Row:
    fields: dict[str, object] = {
        "server": server, "inflight": inflight, "rate": rate, "p50_ms": p50, "p90_ms": p50,
        "p99_ms": p50, "max_ms": p50, "calls": int(rate * 10), "ok": int(rate * 10),
        "errors": 0, "elapsed_s": 10.0, "server_cpu_s": cpu_s, "vault_cpu_s": 1.0,
        "generator_cpu_s": 1.0, "vault_calls": int(rate * 10), "repeat_share": 0.5,
    }  # fmt: skip
    fields.update(extra)
    return Row(**fields)  # type: ignore[arg-type]


def test_comparison_against_each_baseline_and_the_direct_vault() -> None:
    rows = [
        row("echo-threads", 1, 2000, 0.4, 2.0),  # 100 µs/call
        row("echo", 1, 2500, 0.3, 2.0),
        row("strong", 1, 500, 1.2, 5.0),
        row("direct-vault", 1, 3000, 0.3, 0.0, no_server=True),
        row("direct-vault-apart", 1, 2000, 0.45, 0.0, no_server=True),
        row("piigate", 1, 1000, 0.8, 3.0),  # 300 µs/call, 30 % of a core
        row("piigate-batch10", 1, 100, 5.0, 0.9, batch=10),  # 900 µs/call
    ]
    found = {f["server"]: f for f in comparison(rows)}
    assert set(found) == {"strong", "piigate", "piigate-batch10"}
    p = found["piigate"]
    assert p["cpu_vs_echo_threads"] == pytest.approx(3.0)
    assert p["rate_vs_echo"] == pytest.approx(0.4)
    assert p["rate_vs_strong"] == pytest.approx(2.0)
    assert p["p50_added_ms"] == pytest.approx(0.5)
    assert p["p50_added_apart_ms"] == pytest.approx(0.35)  # its generator on CPU 0
    assert p["bound"] == "latency (30%)"
    batch = found["piigate-batch10"]
    assert batch["cpu_us_per_token"] == pytest.approx(90.0)
    assert "rate_vs_echo" not in batch  # a batch call is not a call
    assert "| piigate-batch10 |" in comparison_table(rows)


def test_a_server_at_its_core_is_cpu_bound() -> None:
    assert row("piigate", 64, 1000, 5.0, 9.5).bound == "CPU (95%)"
    assert row("piigate", 64, 1000, 5.0, 7.0).bound == "mixed (70%)"
    assert row("direct-vault", 1, 1000, 5.0, 0.0, no_server=True).bound == "latency"


def test_added_latency_is_read_at_one_in_flight_only() -> None:
    rows = [row("direct-vault", 16, 3000, 2.0, 0.0, no_server=True),
            row("piigate", 16, 1000, 5.0, 3.0)]  # fmt: skip
    assert "p50_added_ms" not in comparison(rows)[0]


async def test_the_delay_proxy_holds_each_direction_and_keeps_order() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
    relay = await start_relay(("127.0.0.1", upstream.sockets[0].getsockname()[1]),
                              ("127.0.0.1", 0), 0.005)  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", relay.sockets[0].getsockname()[1])  # fmt: skip
        payload = bytes(range(256)) * 2000  # 512 KB, many chunks each way
        began = time.perf_counter()
        writer.write(b"ping")
        async with asyncio.timeout(5):
            assert await reader.readexactly(4) == b"ping"
        assert time.perf_counter() - began >= 0.010  # 5 ms each way
        writer.write(payload)
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(payload)) == payload
        writer.close()
    finally:
        relay.close()
        upstream.close()
