"""The shared store against a real redis-server on loopback: the one script decides
exactly as the in-memory store does, in one round trip, holding keyed hashes only; and
down, slow or garbage stores are StoreFailures within the budget, recovered without a
restart."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from piigate.config.state import RedisConfig
from piigate.limits.health import StateHealth
from piigate.limits.memory import MemoryStore
from piigate.limits.ratelimit import Rate
from piigate.limits.redis_store import RedisStore
from piigate.limits.replay import ReplayGuard
from piigate.limits.script import SHA1
from piigate.limits.store import (
    ADMITTED,
    Admission,
    DistinctCap,
    OneTimeUse,
    StateKeys,
    StoreFailure,
    Verdict,
)
from tests.support.redis import RedisServer, running_bad_store, running_redis

KEYS = StateKeys(b"k" * 32)
T0 = 1_900_000_000.0
SCRIPT_COMMANDS = {f"cmdstat_{c}" for c in (
    "hmget", "hset", "pexpire", "zremrangebyscore", "zscore", "zcard", "zadd", "set")}


def redis_config(url: str, password: str | None = None, timeout_s: float = 0.5) -> RedisConfig:
    return RedisConfig(url=url, ca_file=None, username=None, password=password,
                       key_prefix="t:", connect_timeout_s=timeout_s, command_timeout_s=timeout_s,
                       pool_size=4)


def admission(now: float, caller: str = "svc", sub: str = "alice", *, jti: str | None = None,
              caller_rate: Rate | None = None, subject_rate: Rate | None = None,
              distinct: DistinctCap | None = None) -> Admission:
    once = None
    if jti is not None:
        once = OneTimeUse(KEYS.token("iss", jti), now + 600, "iss", jti)
    return Admission("support", KEYS.profile("support"), now, KEYS.caller(caller),
                     KEYS.subject("iss", sub), caller_rate, subject_rate, distinct, once)


@pytest.fixture
def store_server(tmp_path: Path) -> RedisServer:
    with running_redis(tmp_path) as server:
        yield server


async def test_the_script_decides_as_the_memory_store_does(store_server: RedisServer) -> None:
    shared = RedisStore(redis_config(store_server.url), StateHealth())
    memory = MemoryStore(ReplayGuard(lambda: T0))
    rng = random.Random(7)
    rates = dict(caller_rate=Rate(5.0, 3), subject_rate=Rate(0.5, 2),
                 distinct=DistinctCap(3, 10.0))
    now, verdicts = T0, []
    try:
        for i in range(400):
            now += rng.choice((0.0, 0.01, 0.1, 0.3, 1.0, 4.0))
            a = admission(now, rng.choice(("svc", "other")),
                          rng.choice(("alice", "bob", "carol", "dave", "erin")),
                          jti=rng.choice((None, f"j{i}", f"j{i // 3}")), **rates)
            mine, theirs = memory.admit_now(a), await shared.admit(a, 1.0)
            assert theirs.refused == mine.refused, i
            assert theirs.retry_after_s == pytest.approx(mine.retry_after_s, abs=1e-9)
            verdicts.append(mine.refused)
    finally:
        await shared.aclose()
    assert {None, "caller", "subject", "distinct", "replayed"} <= set(verdicts)


async def test_the_script_decides_per_actor_as_the_memory_store_does(
    store_server: RedisServer,
) -> None:
    """Support desks and clinicians: the actor's bucket and window beside the caller's,
    and a call without an actor (its limits then off) between them."""
    shared = RedisStore(redis_config(store_server.url), StateHealth())
    memory = MemoryStore(ReplayGuard(lambda: T0))
    rng = random.Random(11)
    now, verdicts = T0, []
    try:
        for _ in range(400):
            now += rng.choice((0.0, 0.01, 0.1, 0.3, 1.0, 4.0))
            actor = rng.choice((None, "sam", "kim", "lee"))
            a = dataclasses.replace(
                admission(now, "console", rng.choice(("alice", "bob", "carol", "dave")),
                          caller_rate=Rate(8.0, 6), distinct=DistinctCap(4, 10.0)),
                actor=KEYS.actor("staff", actor) if actor else None,
                actor_rate=Rate(1.0, 2), actor_distinct=DistinctCap(2, 10.0))
            mine, theirs = memory.admit_now(a), await shared.admit(a, 1.0)
            assert theirs.refused == mine.refused
            assert theirs.retry_after_s == pytest.approx(mine.retry_after_s, abs=1e-9)
            verdicts.append(mine.refused)
    finally:
        await shared.aclose()
    assert {None, "actor", "actor_distinct"} <= set(verdicts)


async def test_one_round_trip_per_request_and_keys_hold_keyed_hashes_only(
        store_server: RedisServer) -> None:
    store = RedisStore(redis_config(store_server.url), StateHealth())
    client = store_server.client()
    try:
        all_controls = dict(caller_rate=Rate(1, 5), subject_rate=Rate(1, 5),
                            distinct=DistinctCap(10, 60))
        await store.admit(admission(T0, "support-tool", "auth0|alice", jti="jti-1",
                                    **all_controls), 1.0)
        client.config_resetstat()
        for i in range(5):
            await store.admit(admission(T0, "support-tool", "auth0|alice", jti=f"jti-{i + 2}",
                                        **all_controls), 1.0)
        stats = client.info("commandstats")  # also counts the script's own commands
        issued = set(stats) - SCRIPT_COMMANDS - {"cmdstat_config|resetstat", "cmdstat_info"}
        assert issued == {"cmdstat_evalsha"}
        assert stats["cmdstat_evalsha"]["calls"] == 5
        names = [k.decode() for k in client.scan_iter(count=1000)]
        # Two buckets, one window, five markers: the sixth call found the buckets empty.
        assert len(names) == 8
        text = " ".join(names + [m.decode() for n in names if n.startswith("t:ds:")
                                 for m in client.zrange(n, 0, -1)])
        for plain in ("support-tool", "alice", "jti-", "support"):
            assert plain not in text
        assert all(client.pttl(n) > 0 for n in names)  # everything expires
    finally:
        client.close()
        await store.aclose()


async def test_the_script_is_loaded_again_after_a_flush(store_server: RedisServer) -> None:
    store = RedisStore(redis_config(store_server.url), StateHealth())
    client = store_server.client()
    try:
        assert await store.admit(admission(T0, jti="a"), 1.0) == ADMITTED
        client.script_flush()
        assert await store.admit(admission(T0, jti="a"), 1.0) == Verdict("replayed")
        assert client.script_exists(SHA1) == [True]
    finally:
        client.close()
        await store.aclose()


async def test_a_one_time_marker_lives_until_exp_plus_leeway(store_server: RedisServer) -> None:
    store = RedisStore(redis_config(store_server.url), StateHealth())
    client = store_server.client()
    try:
        await store.admit(admission(T0, jti="a"), 1.0)
        (name,) = [k for k in client.scan_iter("t:jti:*")]
        assert 599_000 < client.pttl(name) <= 600_000
    finally:
        client.close()
        await store.aclose()


async def test_a_stopped_store_fails_then_recovers_without_a_restart(
        store_server: RedisServer) -> None:
    health = StateHealth()
    store = RedisStore(redis_config(store_server.url), health)
    try:
        assert await store.admit(admission(T0, jti="a"), 1.0) == ADMITTED
        assert health.ready
        store_server.stop()
        with pytest.raises(StoreFailure) as failed:
            await store.admit(admission(T0, jti="b"), 1.0)
        assert failed.value.kind == "unreachable"
        assert not health.ready
        store_server.start()
        assert await store.admit(admission(T0, jti="b"), 1.0) == ADMITTED
        assert health.ready
        assert health.recoveries == 1
    finally:
        await store.aclose()


async def test_a_slow_store_costs_one_budget(store_server: RedisServer) -> None:
    import asyncio

    store = RedisStore(redis_config(store_server.url, timeout_s=5.0), StateHealth())
    try:
        await store.ping(1.0)
        sleeper = asyncio.create_task(asyncio.to_thread(store_server.sleep, 1.5))
        await asyncio.sleep(0.2)  # the server is now inside DEBUG SLEEP
        with pytest.raises(StoreFailure) as failed:
            await store.admit(admission(T0, jti="a"), 0.2)  # the caller's budget binds
        assert failed.value.kind == "timeout"
        await sleeper
        assert await store.admit(admission(T0, jti="a"), 1.0) == ADMITTED
    finally:
        await store.aclose()


@pytest.mark.parametrize(("mode", "kind"), [("garbage", "garbage"), ("silent", "timeout")])
async def test_a_store_that_speaks_no_redis_is_a_failure(mode: str, kind: str) -> None:
    async with running_bad_store(mode) as bad:  # type: ignore[arg-type]
        store = RedisStore(redis_config(bad.url, timeout_s=0.3), StateHealth())
        try:
            with pytest.raises(StoreFailure) as failed:
                await store.admit(admission(T0, jti="a"), 0.3)
            assert failed.value.kind == kind
        finally:
            await store.aclose()


async def test_a_password_protected_store(tmp_path: Path) -> None:
    with running_redis(tmp_path, password="s3cret-for-tests") as server:
        wrong = RedisStore(redis_config(server.url, password="nope"), StateHealth())
        right = RedisStore(redis_config(server.url, password="s3cret-for-tests"),
                           StateHealth())
        try:
            with pytest.raises(StoreFailure):
                await wrong.admit(admission(T0, jti="a"), 1.0)
            assert await right.admit(admission(T0, jti="a"), 1.0) == ADMITTED
        finally:
            await wrong.aclose()
            await right.aclose()


async def test_an_acl_user_with_only_the_documented_rights(store_server: RedisServer) -> None:
    client = store_server.client()
    client.execute_command(  # as deploy/README.md gives it, with this test's prefix
        "ACL", "SETUSER", "piigate", "on", ">acl-pass", "~t:*", "+evalsha", "+eval", "+ping",
        "+hmget", "+hset", "+pexpire", "+zremrangebyscore", "+zscore", "+zcard", "+zadd", "+set")
    config = RedisConfig(url=store_server.url, ca_file=None, username="piigate",
                         password="acl-pass", key_prefix="t:", pool_size=2)
    store = RedisStore(config, StateHealth())
    try:
        every = dict(caller_rate=Rate(1, 5), subject_rate=Rate(1, 5), distinct=DistinctCap(2, 60))
        assert await store.admit(admission(T0, jti="a", **every), 1.0) == ADMITTED
        assert await store.admit(admission(T0, jti="a", **every), 1.0) == Verdict("replayed")
        await store.ping(1.0)
    finally:
        client.close()
        await store.aclose()
