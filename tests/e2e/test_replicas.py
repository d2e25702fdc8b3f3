"""Many replicas, one policy: three gateways (each its own process state: its own
AbuseGuard, caches and audit trail) share a real redis-server, and one-time tokens,
per-subject bursts and the harvesting cap hold across all of them; `--workers 2` uses the
same store; a store outage gets each control's configured answer within the deadline and
recovers without a restart; restarting every replica forgets nothing."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import signal
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import RunningGateway, start_gateway
from piigate.limits.abuse import STATE_FAILURES
from piigate.transport.addresses import ListenAddress
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError, ResourceExhausted, Unauthenticated, Unavailable
from piigate_dev import demo
from tests.support.redis import RedisServer, running_redis
from tests.support.stack import Stack, running_stack

SUBJECT_KEY = secrets.token_hex(32)
PASSWORD = secrets.token_hex(16)
STATE_ENV = {"PIIGATE_SUBJECT_KEY": SUBJECT_KEY, "PIIGATE_REDIS_PASSWORD": PASSWORD}
FHIR_SCOPE = "openid launch/patient patient/Patient.read"
HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


def state_table(store: RedisServer) -> dict[str, Any]:
    return {"backend": "redis", "url": store.url, "subject_key_env": "PIIGATE_SUBJECT_KEY",
            "password_env": "PIIGATE_REDIS_PASSWORD", "command_timeout_ms": 300}


@asynccontextmanager
async def replicas(store: RedisServer, profiles: dict[str, Any]
                   ) -> AsyncIterator[tuple[Stack, list[RunningGateway]]]:
    """A stack (its gateway is replica A) and two more gateways B and C on the same
    config; each builds its own parts, so only the shared store links them."""
    overrides = {"state": state_table(store), "profiles": profiles}
    async with running_stack(gateway_overrides=overrides, environ_extra=STATE_ENV) as stack:
        gateways = [stack.gateway]
        try:
            for _ in range(2):
                gateways.append(await start(stack))
            yield stack, gateways
        finally:
            for gateway in gateways[1:]:
                await gateway.stop(grace_s=1)


async def start(stack: Stack) -> RunningGateway:
    return await start_gateway(stack.config, listen=ListenAddress("127.0.0.1", 0),
                               audit=ChainedJsonLinesSink(io.BytesIO()))


def client(stack: Stack, gateway: RunningGateway, credential: str) -> AsyncDetokenizationClient:
    c = AsyncDetokenizationClient(f"127.0.0.1:{gateway.port}", lambda: credential, timeout_s=5)
    stack._clients.append(c)
    return c


async def reason_of(call: Any) -> str:
    try:
        await call
    except PiigateError as exc:
        return exc.reason
    return "OK"


async def health_of(gateway: RunningGateway, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def until_health(gateway: RunningGateway, service: str, status: int) -> None:
    for _ in range(200):  # bounded: the watcher backs off up to 5 s between pings
        if await health_of(gateway, service) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{service} never became {status}")


async def test_a_one_time_token_used_on_one_replica_is_refused_on_the_others(
        tmp_path: Path) -> None:
    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, {"support": {"one_time_tokens": True}}) as (stack, gws):
            credential = await stack.caller_token("support-tool")
            a, b, c = (client(stack, g, credential) for g in gws)
            token = stack.user_token("alice")
            assert (await a.detokenize(token))["ssn"].value == "***-**-1234"
            for other in (b, c):
                with pytest.raises(Unauthenticated) as caught:
                    await other.detokenize(token)
                assert caught.value.reason == "TOKEN_REPLAYED"


async def test_a_per_subject_burst_is_shared_by_every_replica(tmp_path: Path) -> None:
    limits = {"limits": {"subject_per_s": 0.001, "subject_burst": 5}}
    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, {"support": limits}) as (stack, gws):
            credential = await stack.caller_token("support-tool")
            clients = [client(stack, g, credential) for g in gws]
            outcomes = [await reason_of(clients[i % 3].detokenize(stack.user_token("alice")))
                        for i in range(9)]
            assert outcomes == ["OK"] * 5 + ["RATE_LIMITED"] * 4
            with pytest.raises(ResourceExhausted) as caught:
                await clients[1].detokenize(stack.user_token("alice"))
            assert caught.value.metadata["limit"] == "subject"
            assert caught.value.retry_after_s is not None
            assert caught.value.retry_after_s > 900
            assert await reason_of(clients[2].detokenize(stack.user_token("bob"))) == "OK"


async def test_the_harvesting_cap_is_global(tmp_path: Path) -> None:
    limits = {"limits": {"distinct_subjects": 2, "distinct_window_s": 3600}}
    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, {"support": limits}) as (stack, gws):
            credential = await stack.caller_token("support-tool")
            a, b, c = (client(stack, g, credential) for g in gws)
            assert await reason_of(a.detokenize(stack.user_token("alice"))) == "OK"
            assert await reason_of(b.detokenize(stack.user_token("bob"))) == "OK"
            assert await reason_of(c.detokenize(stack.user_token("carol"))) == \
                "DISTINCT_SUBJECTS_EXCEEDED"
            assert await reason_of(c.detokenize(stack.user_token("alice"))) == "OK"
            events = [e["event"] for e in stack.audit_events()]
            assert "harvesting_suspected" not in events  # it was refused on C, not on A


async def test_workers_use_the_same_store(tmp_path: Path) -> None:
    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, {"support": {"one_time_tokens": True}}) as (stack, gws):
            config = tmp_path / "piigate.toml"
            text = demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                                       tmp_path / "audit.jsonl")
            state = "\n".join(f"{k} = {v!r}".replace("'", '"')
                              for k, v in state_table(store).items())
            text = text.replace("[profiles.support]\n",
                                "[profiles.support]\none_time_tokens = true\n")
            config.write_text(f"{text}\n[state]\n{state}\n")
            assert tomllib.loads(config.read_text())["state"]["backend"] == "redis"
            env = {**os.environ, **STATE_ENV,
                   "PIIGATE_DEMO_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
                   "PIIGATE_DEMO_VAULT_KEY_SUPPORT": stack.secrets.vault_support}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "piigate", "serve", "--config", str(config),
                "--workers", "2", "--listen", "127.0.0.1:0",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
            try:
                assert proc.stdout is not None
                line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
                assert line.rstrip().endswith("(2 workers)"), line
                target = line.split()[2]
                credential = await stack.caller_token("support-tool")
                used = stack.user_token("alice")
                await client(stack, gws[0], credential).detokenize(used)
                fresh = [stack.user_token("alice") for _ in range(6)]
                outcomes = []
                for token in [used, *fresh]:  # a new connection each: both workers answer
                    outcomes.append(await until_answered(target, credential, token))
                assert outcomes == ["TOKEN_REPLAYED"] + ["OK"] * 6
                a = client(stack, gws[0], credential)
                assert [await reason_of(a.detokenize(t)) for t in fresh] == \
                    ["TOKEN_REPLAYED"] * 6
            finally:
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0


async def until_answered(target: str, credential: str, token: str) -> str:
    """The outcome of one call, retried while the workers still load their keys."""
    for _ in range(100):
        async with AsyncDetokenizationClient(target, lambda: credential, timeout_s=5) as c:
            outcome = await reason_of(c.detokenize(token))
        if outcome not in ("ISSUER_KEYS_UNAVAILABLE", "UNAVAILABLE"):
            return outcome
        await asyncio.sleep(0.1)
    raise AssertionError("the workers never answered")


async def test_a_store_outage_gets_each_controls_configured_answer_and_recovers(
        tmp_path: Path) -> None:
    profiles = {"support": {"one_time_tokens": True},
                "smart_on_fhir": {"limits": {"subject_per_s": 0.001, "subject_burst": 50,
                                             "on_store_failure": "fail_open"}}}
    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, profiles) as (stack, gws):
            support_credential = await stack.caller_token("support-tool")
            fhir_credential = await stack.caller_token("fhir-app")
            support = [client(stack, g, support_credential) for g in gws]
            fhir = [client(stack, g, fhir_credential) for g in gws]

            def fhir_token() -> str:
                return stack.user_token("alice", audience=demo.FHIR_AUDIENCE, scope=FHIR_SCOPE)

            assert await reason_of(support[0].detokenize(stack.user_token("alice"))) == "OK"
            await until_health(gws[0], "piigate.state", health_pb2.HealthCheckResponse.SERVING)

            store.stop()
            for i in range(3):
                with pytest.raises(Unavailable) as caught:
                    await support[i].detokenize(stack.user_token("alice"))
                assert caught.value.reason == "STATE_UNAVAILABLE"
                assert await reason_of(fhir[i].detokenize(fhir_token())) == "OK"  # fail open
            for g in gws:
                assert g.metrics.value(STATE_FAILURES, profile="smart_on_fhir",
                                       outcome="admitted") == 1
                # The client retries UNAVAILABLE by itself: each attempt was refused.
                assert g.metrics.value(STATE_FAILURES, profile="support", outcome="refused") >= 1
                await until_health(g, "piigate.state", health_pb2.HealthCheckResponse.NOT_SERVING)
                # A shared store's outage is no reason to take a replica out of service.
                assert await health_of(g, "") == health_pb2.HealthCheckResponse.SERVING

            store.start()  # an empty store (no persistence): the outage is over
            for g, c in zip(gws, support, strict=True):
                assert await reason_of(c.detokenize(stack.user_token("bob"))) == "OK"
                await until_health(g, "piigate.state", health_pb2.HealthCheckResponse.SERVING)

            # Slow rather than down: answered by the gateway within the caller's deadline.
            sleeper = asyncio.create_task(asyncio.to_thread(store.sleep, 2))
            await asyncio.sleep(0.3)
            assert await reason_of(support[1].detokenize(stack.user_token("carol"))) == \
                "STATE_UNAVAILABLE"
            await sleeper
            assert await reason_of(support[1].detokenize(stack.user_token("carol"))) == "OK"


async def test_restarting_every_replica_forgets_no_token_and_no_limit(tmp_path: Path) -> None:
    profiles = {"support": {"one_time_tokens": True,
                            "limits": {"subject_per_s": 0.001, "subject_burst": 3}}}
    with running_redis(tmp_path, password=PASSWORD, persist=True) as store:
        async with replicas(store, profiles) as (stack, gws):
            credential = await stack.caller_token("support-tool")
            used = stack.user_token("bob")
            assert await reason_of(client(stack, gws[0], credential).detokenize(used)) == "OK"
            for g in gws[:2]:
                assert await reason_of(client(stack, g, credential).detokenize(
                    stack.user_token("alice"))) == "OK"
            async with AsyncExitStack() as restarted:
                for g in gws:
                    await g.stop(grace_s=1)
                store.stop()
                store.start()  # the store too, from its append-only file
                fresh = []
                for _ in range(3):
                    g = await start(stack)
                    restarted.push_async_callback(g.stop, 1)
                    fresh.append(client(stack, g, credential))
                assert await reason_of(fresh[0].detokenize(used)) == "TOKEN_REPLAYED"
                outcomes = [await reason_of(c.detokenize(stack.user_token("alice")))
                            for c in fresh]
                assert outcomes == ["OK", "RATE_LIMITED", "RATE_LIMITED"]


async def test_the_images_health_check_is_liveness_unless_asked_for_readiness(
        tmp_path: Path) -> None:
    async def check(*args: str) -> int:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(HEALTHCHECK), *args)
        return await asyncio.wait_for(proc.wait(), 30)

    with running_redis(tmp_path, password=PASSWORD) as store:
        async with replicas(store, {}) as (_, gws):
            address = f"127.0.0.1:{gws[1].port}"
            assert await check(address) == 0
            await until_health(gws[1], "", health_pb2.HealthCheckResponse.SERVING)
            assert await check("--ready", address) == 0
            await gws[1].stop(grace_s=0)
            assert await check("--timeout-s", "0.5", address) == 1
