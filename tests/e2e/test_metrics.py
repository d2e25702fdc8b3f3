"""`/metrics` scraped from real running gateways and read with prometheus-client's own
parser: histograms move with the calls made, calls in flight show while the vault holds
them, the shared store's calls are timed and its outage counted, and `piigate serve
--workers 2` is one scrape target whose counts are the sum over both workers. Nothing
scraped ever carries a token, a subject or a value."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from piigate import __version__
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PermissionDenied, PiigateError, Unavailable
from piigate_dev import demo
from tests.support.redis import running_redis
from tests.support.stack import Stack, running_stack

METRICS = {"server": {"metrics_listen": "127.0.0.1:0"}}
WAIT_S = 20.0  # only a hang reaches it
SUPPORT_OK = {"method": "Detokenize", "profile": "support", "outcome": "allowed"}
Families = dict[str, Metric]


async def scrape(url: str) -> tuple[Families, str]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http, \
            http.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def value(families: Families, family: str, sample: str | None = None,
          **labels: str) -> float:
    """One sample's value (0 when absent: a series appears with its first observation)."""
    found = [s.value for s in families[family].samples if s.name == (sample or family)
             and s.labels == labels] if family in families else []
    assert len(found) <= 1, f"{family} {labels} appears {len(found)} times"
    return found[0] if found else 0.0


def buckets(families: Families, family: str, **labels: str) -> dict[float, float]:
    return {float(s.labels["le"]): s.value for s in families[family].samples
            if s.name == f"{family}_bucket"
            and {k: v for k, v in s.labels.items() if k != "le"} == labels}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def metrics_url(stack: Stack) -> str:
    assert stack.gateway.metrics_url is not None, "server.metrics_listen did not start"
    return stack.gateway.metrics_url


# --- one gateway --------------------------------------------------------------------------
async def test_histograms_move_with_the_calls_made() -> None:
    async with running_stack(gateway_overrides=METRICS) as stack:
        url = metrics_url(stack)
        support = await stack.caller("support-tool")
        await support.detokenize(stack.user_token("alice"))  # keys fetched, series exist
        before, _ = await scrape(url)
        tokens = [stack.user_token(person) for person in ("alice", "bob", "carol")]
        for token in tokens:
            await support.detokenize(token)
        billing = await stack.caller("billing-app")
        with pytest.raises(PiigateError):
            await billing.detokenize(tokens[0])
        after, text = await scrape(url)

        def moved(family: str, sample: str | None = None, **labels: str) -> float:
            return (value(after, family, sample, **labels)
                    - value(before, family, sample, **labels))

        assert moved("piigate_decisions", "piigate_decisions_total", **SUPPORT_OK,
                     reason="OK") == 3
        duration = "piigate_decision_duration_seconds"
        assert moved(duration, f"{duration}_count", **SUPPORT_OK) == 3
        assert moved(duration, f"{duration}_sum", **SUPPORT_OK) > 0
        grew = {le: n - buckets(before, duration, **SUPPORT_OK).get(le, 0.0)
                for le, n in buckets(after, duration, **SUPPORT_OK).items()}
        assert grew[float("inf")] == 3
        ordered = [grew[le] for le in sorted(grew)]
        assert ordered == sorted(ordered)  # cumulative buckets
        denied = [s for s in after["piigate_decisions"].samples
                  if s.labels.get("outcome") == "denied"]
        assert denied  # the refused caller, with its reason on the counter only
        assert all(s.labels["reason"] for s in denied)

        vault = "piigate_vault_request_duration_seconds"
        assert 1 <= moved(vault, f"{vault}_count", outcome="ok") <= 3  # may be coalesced
        audit = "piigate_audit_write_duration_seconds"
        assert moved(audit, f"{audit}_count", outcome="ok") == 4  # every decision's event
        jwks = "piigate_jwks_fetch_duration_seconds"
        assert value(after, jwks, f"{jwks}_count", issuer="dev", outcome="ok") >= 1
        assert value(after, "piigate_jwks_ready", issuer="dev") == 1
        assert value(after, "piigate_jwks_fetches", "piigate_jwks_fetches_total",
                     issuer="dev") >= 1
        assert value(after, "piigate_audit_ready") == 1
        assert value(after, "piigate_calls_in_flight") == 0
        assert value(after, "piigate_calls_queued") == 0
        assert value(after, "piigate_build_info", version=__version__) == 1
        assert value(after, "process_resident_memory_bytes") > 0
        assert_no_secrets(stack, text, tokens)

        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
            assert response.status == 200
            report = json.loads(await response.text())
        assert report["ready"] is True
        assert report["issuers"]["dev"]["ready"] is True


def assert_no_secrets(stack: Stack, text: str, tokens: list[str]) -> None:
    forbidden = [*tokens, *(part for token in tokens for part in token.split("."))]
    for person, record in demo.PEOPLE:
        forbidden += [f"auth0|{person}", stack.users[person].token_id, *record.values()]
    forbidden += ["***-**-1234", "a***@example.com"]
    assert [s for s in forbidden if s in text] == []


@asynccontextmanager
async def held_vault() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """A vault that holds each call until released, then refuses it (403: not retried)."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(_request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"error_code": "PV3001", "message": "no"}, status=403)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hold)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", arrived, release
    finally:
        release.set()
        await runner.cleanup()


async def test_a_call_the_vault_holds_is_in_flight_until_it_is_answered() -> None:
    async with held_vault() as (vault_url, arrived, release), running_stack(
            gateway_overrides=METRICS, vault_url=vault_url) as stack:
        url = metrics_url(stack)
        support = await stack.caller("support-tool")
        call = asyncio.ensure_future(support.detokenize(stack.user_token("alice")))
        await asyncio.wait_for(arrived.wait(), WAIT_S)
        during, _ = await scrape(url)
        assert value(during, "piigate_calls_in_flight") == 1
        assert value(during, "piigate_calls_queued") == 0
        release.set()
        with pytest.raises(PermissionDenied):
            await call

        async def settled() -> bool:
            return value((await scrape(url))[0], "piigate_calls_in_flight") == 0

        await eventually(settled, "the call to leave the bridge")
        after, _ = await scrape(url)
        vault = "piigate_vault_request_duration_seconds"
        assert value(after, vault, f"{vault}_count", outcome="access_denied") == 1
        assert value(after, "piigate_decisions", "piigate_decisions_total",
                     method="Detokenize", profile="support", outcome="denied",
                     reason="VAULT_ACCESS_DENIED") == 1  # a PERMISSION_DENIED: denied


# --- the shared state store ---------------------------------------------------------------
async def test_state_store_calls_are_timed_and_its_outage_counted(tmp_path: Path) -> None:
    password = secrets.token_hex(16)
    env = {"PIIGATE_SUBJECT_KEY": secrets.token_hex(32), "PIIGATE_REDIS_PASSWORD": password}
    with running_redis(tmp_path, password=password) as store:
        overrides = {**METRICS, "profiles": {"support": {"one_time_tokens": True}}, "state": {
            "backend": "redis", "url": store.url, "subject_key_env": "PIIGATE_SUBJECT_KEY",
            "password_env": "PIIGATE_REDIS_PASSWORD", "command_timeout_ms": 300}}
        async with running_stack(gateway_overrides=overrides, environ_extra=env) as stack:
            url = metrics_url(stack)
            support = await stack.caller("support-tool")
            await support.detokenize(stack.user_token("alice"))
            before, _ = await scrape(url)
            name = "piigate_state_store_request_duration_seconds"
            assert value(before, name, f"{name}_count", operation="admit", outcome="ok") == 1
            assert value(before, "piigate_state_ready") == 1

            store.stop()
            with pytest.raises(Unavailable):
                await support.detokenize(stack.user_token("bob"))
            after, _ = await scrape(url)
            failed = sum(s.value for s in after[name].samples if s.name == f"{name}_count"
                         and s.labels["operation"] == "admit" and s.labels["outcome"] != "ok")
            assert failed >= 1
            assert value(after, "piigate_state_ready") == 0
            assert value(after, "piigate_state_store_failures",
                         "piigate_state_store_failures_total") >= 1
            assert value(after, "piigate_state_failures", "piigate_state_failures_total",
                         profile="support", outcome="refused") >= 1


# --- --workers 2 --------------------------------------------------------------------------
async def start_workers(stack: Stack, tmp_path: Path
                        ) -> tuple[asyncio.subprocess.Process, str, str]:
    config = tmp_path / "piigate.toml"
    text = demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                               tmp_path / "audit.jsonl")
    config.write_text(text.replace("[server]\n", '[server]\nmetrics_listen = "127.0.0.1:0"\n',
                                   1))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "PIIGATE_DEMO_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
           "PIIGATE_DEMO_VAULT_KEY_SUPPORT": stack.secrets.vault_support,
           "TMPDIR": str(temporary)}  # where the supervisor makes its metrics directory
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate", "serve", "--config", str(config), "--workers", "2",
        "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    listening = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    metrics = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert listening.startswith("listening on 127.0.0.1:"), listening
    assert metrics.startswith("metrics on http://127.0.0.1:"), metrics
    return proc, listening.split()[2], metrics.split()[2]


async def one_call(target: str, token: str, subject: str) -> bool:
    """One call on a channel of its own (the kernel spreads connections, not calls)."""
    async with AsyncDetokenizationClient(target, lambda: token, timeout_s=5) as client:
        try:
            await client.detokenize(subject)
        except PiigateError:
            return False  # a worker still loading its keys
    return True


def allowed_per_worker(directory: Path) -> list[int]:
    return [(directory / f"audit.jsonl.{i}").read_text().count('"outcome":"allowed"')
            if (directory / f"audit.jsonl.{i}").exists() else 0 for i in range(2)]


async def test_workers_are_one_target_whose_counts_sum_over_the_workers(
        tmp_path: Path) -> None:
    async with running_stack() as stack:
        proc, target, url = await start_workers(stack, tmp_path)
        try:
            token = await stack.caller_token("support-tool")
            for _ in range(200):  # bounded: until both workers have served some
                await one_call(target, token, stack.user_token("alice"))
                if min(allowed_per_worker(tmp_path)) >= 2:
                    break
            per_worker = allowed_per_worker(tmp_path)
            assert min(per_worker) >= 2, per_worker
            families, text = await scrape(url)
            assert value(families, "piigate_decisions", "piigate_decisions_total",
                         **SUPPORT_OK, reason="OK") == sum(per_worker)
            duration = "piigate_decision_duration_seconds"
            assert value(families, duration, f"{duration}_count", **SUPPORT_OK) == sum(
                per_worker)
            assert buckets(families, duration, **SUPPORT_OK)[float("inf")] == sum(per_worker)
            assert value(families, "piigate_build_info", version=__version__) == 1
            assert value(families, "piigate_calls_in_flight") == 0
            assert [s.labels for s in families["piigate_build_info"].samples] == [
                {"version": __version__}]  # live gauges merged: no pid label

            async def published() -> bool:  # each worker's read-off values, every second
                now, _ = await scrape(url)
                return (value(now, "piigate_jwks_ready", issuer="dev") == 1
                        and value(now, "process_cpu_seconds", "process_cpu_seconds_total") > 0)

            await eventually(published, "the workers' readiness gauges")
            async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
                assert response.status == 200
                report: dict[str, Any] = json.loads(await response.text())
            assert report["ready"] is True
            assert set(report["workers"]) == {"0", "1"}
            pids = {w["pid"] for w in report["workers"].values()}
            assert len(pids) == 2  # two processes behind the one target
            assert all(w["issuers"]["dev"]["ready"] for w in report["workers"].values())
            assert_no_secrets(stack, text, [token])
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert list((tmp_path / "tmp").iterdir()) == []  # the metrics directory is gone
