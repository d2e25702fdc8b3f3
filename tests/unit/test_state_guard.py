"""The abuse stage over a store: one store call per request that needs one, none for a
profile without controls, keyed hashes only, and each control's outcome when the store
fails (one-time tokens always closed; limits closed unless the profile says fail_open)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from piigate.config import Profile, parse_config
from piigate.errors import (
    RateLimited,
    StateUnavailable,
    TokenClaimMissing,
    TokenReplayed,
)
from piigate.identity.caller import Caller
from piigate.limits.abuse import STATE_FAILURES, AbuseGuard
from piigate.limits.replay import ReplayGuard
from piigate.limits.store import ADMITTED, Admission, StoreFailure, Verdict
from piigate.telemetry.metrics import GatewayMetrics
from piigate.tokens.verification import MAX_LEEWAY_S, VerifiedToken
from piigate_dev import demo

NOW = 1_900_000_000.0
CALLER = Caller("support-tool", "dev")


class FakeStore:
    """Answers `verdict`, or fails; remembers what it was asked and with which budget."""

    def __init__(self, verdict: Verdict = ADMITTED, fail: bool = False) -> None:
        self.verdict, self.fail = verdict, fail
        self.calls: list[tuple[Admission, float]] = []

    async def admit(self, admission: Admission, timeout_s: float) -> Verdict:
        self.calls.append((admission, timeout_s))
        if self.fail:
            raise StoreFailure("unreachable")
        return self.verdict

    async def ping(self, timeout_s: float) -> None:
        return None

    async def aclose(self) -> None:
        return None


def profiles(**support: Any) -> dict[str, Profile]:
    data = tomllib.loads(demo.gateway_config("https://issuer.example/", "http://127.0.0.1:1",
                                             Path("audit.jsonl")))
    data["profiles"]["support"].update(support)
    environ = {"PIIGATE_DEMO_VAULT_KEY_FHIR": "k", "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "k"}
    return {p.name: p for p in parse_config(data, environ, Path(".")).profiles}


def token(jti: str | None = "j-1") -> VerifiedToken:
    claims: dict[str, Any] = {"iss": "https://issuer.example/", "sub": "auth0|alice"}
    if jti is not None:
        claims["jti"] = jti
    return VerifiedToken("dev", {}, claims, NOW + 300)


def guard(store: FakeStore, ps: dict[str, Profile], metrics: GatewayMetrics | None = None
          ) -> AbuseGuard:
    return AbuseGuard(ps.values(), ReplayGuard(lambda: NOW), store=store,
                      subject_key=b"s" * 32, metrics=metrics, timeout_s=0.25)


async def test_a_profile_without_controls_never_reaches_the_store() -> None:
    store = FakeStore(fail=True)
    ps = profiles()
    await guard(store, ps).admit(ps["support"], CALLER, token(), NOW)
    assert store.calls == []


async def test_one_call_carrying_every_check_as_keyed_hashes() -> None:
    store = FakeStore()
    ps = profiles(one_time_tokens=True, limits={"caller_per_s": 2, "subject_per_s": 1,
                                                "distinct_subjects": 9})
    await guard(store, ps).admit(ps["support"], CALLER, token(), NOW)
    await guard(store, ps).admit(ps["support"], CALLER, token(), NOW, timeout_s=0.05)
    (a, budget), (_, second_budget) = store.calls
    assert (budget, second_budget) == (0.25, 0.05)  # the configured default, then the caller's
    assert a.caller_rate is not None
    assert a.subject_rate is not None
    assert a.distinct is not None
    assert a.once is not None
    assert a.once.remember_until == NOW + 300 + MAX_LEEWAY_S
    hashed = " ".join((a.caller, a.subject, a.once.key, a.profile_tag))
    for plain in ("support-tool", "alice", "j-1", "support"):
        assert plain not in hashed
    assert "j-1" not in repr(a)
    assert "alice" not in repr(a)


async def test_a_missing_jti_is_refused_before_the_store() -> None:
    store = FakeStore()
    ps = profiles(one_time_tokens=True)
    with pytest.raises(TokenClaimMissing):
        await guard(store, ps).admit(ps["support"], CALLER, token(jti=None), NOW)
    assert store.calls == []


@pytest.mark.parametrize(("verdict", "error"), [
    (Verdict("subject", 2.5), RateLimited), (Verdict("replayed"), TokenReplayed)])
async def test_refusals_become_their_errors(verdict: Verdict, error: type[Exception]) -> None:
    ps = profiles(one_time_tokens=True, limits={"subject_per_s": 1})
    with pytest.raises(error) as caught:
        await guard(FakeStore(verdict), ps).admit(ps["support"], CALLER, token(), NOW)
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after_s == 2.5
        assert dict(caught.value.metadata) == {"profile": "support", "limit": "subject"}


@pytest.mark.parametrize(("support", "admitted"), [
    ({"limits": {"subject_per_s": 1}}, False),
    ({"limits": {"subject_per_s": 1, "on_store_failure": "fail_closed"}}, False),
    ({"limits": {"distinct_subjects": 5, "on_store_failure": "fail_open"}}, True),
    ({"one_time_tokens": True, "limits": {"subject_per_s": 1, "on_store_failure": "fail_open"}},
     False),  # a replay cannot be ruled out: one-time tokens never fail open
    ({"one_time_tokens": True}, False),
])
async def test_each_control_answers_a_failed_store_as_configured(
        support: dict[str, Any], admitted: bool) -> None:
    metrics = GatewayMetrics()
    ps = profiles(**support)
    check = guard(FakeStore(fail=True), ps, metrics).admit(ps["support"], CALLER, token(), NOW)
    if admitted:
        await check
    else:
        with pytest.raises(StateUnavailable) as caught:
            await check
        assert caught.value.reason == "STATE_UNAVAILABLE"
    outcome = "admitted" if admitted else "refused"
    assert metrics.value(STATE_FAILURES, profile="support", outcome=outcome) == 1
    assert b"piigate_state_failures_total{" in metrics.exposition()[0]


async def test_the_memory_store_needs_no_waiting_and_no_configured_key() -> None:
    ps = profiles(one_time_tokens=True)
    memory = AbuseGuard(ps.values(), ReplayGuard(lambda: NOW))
    await memory.admit(ps["support"], CALLER, token(), NOW)
    with pytest.raises(TokenReplayed):
        await memory.admit(ps["support"], CALLER, token(), NOW)
    assert memory.state_health is None  # no shared store: nothing to report


async def test_the_memory_store_remembers_a_jti_through_the_leeway_after_exp() -> None:
    clock = [NOW]
    ps = profiles(one_time_tokens=True)
    memory = AbuseGuard(ps.values(), ReplayGuard(lambda: clock[0]))
    await memory.admit(ps["support"], CALLER, token(), NOW)
    clock[0] = NOW + 300 + 30  # past exp, yet verification still accepts it (leeway)
    with pytest.raises(TokenReplayed):
        await memory.admit(ps["support"], CALLER, token(), clock[0])
