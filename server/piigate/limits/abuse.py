"""Stage 6: abuse limits, after the decision and before the vault.

Per profile: a token bucket per caller and per subject, a cap on how many different users
one caller may ask for within a window (bulk harvesting), and one-time subject tokens; for
a call with an actor (the support agent of `on_behalf_of`, the practitioner of
`launch_patient`), a bucket and a distinct-subject cap per actor as well.
The stage builds one `Admission` per request with every check its profile needs and asks
its store once (`piigate.limits.store`): in process memory (the default), or a shared
Redis so every replica enforces one policy (`[state] backend = "redis"`). A profile that
uses none of these controls never reaches the store.

Subjects, callers and token ids reach the store only as keyed hashes under the subject
key (`[state] subject_key_env`, the same on every replica; random per process when not
configured, which only the memory store allows).

When the store fails (down, slower than the budget, answering garbage):

- one-time tokens always fail closed: STATE_UNAVAILABLE (a replay cannot be ruled out);
- rate limits and the harvesting cap fail closed too unless the profile says
  `on_store_failure = "fail_open"`, which admits the call without them;
- either way `piigate_state_failures_total{profile,outcome}` counts it, and the store's
  health (`piigate.state`) turns NOT_SERVING until it answers again.

A call the store was too slow for may still have been applied by it after the gateway
stopped waiting: its one-time token may be spent and its limits counted, though the
caller was refused. That errs on the safe side (the user asks for a new token); the
opposite, a replay admitted, cannot happen.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from piigate.config import Profile
from piigate.config.state import StateConfig
from piigate.errors import (
    DistinctSubjectsExceeded,
    RateLimited,
    StateUnavailable,
    TokenClaimMissing,
    TokenReplayed,
)
from piigate.identity.caller import Caller
from piigate.limits import health
from piigate.limits.memory import MemoryStore
from piigate.limits.ratelimit import Rate
from piigate.limits.replay import ReplayGuard
from piigate.limits.store import (
    Admission,
    DistinctCap,
    LimitStore,
    OneTimeUse,
    StateKeys,
    StoreFailure,
)
from piigate.telemetry.metrics import GatewayMetrics
from piigate.tokens.verification import MAX_LEEWAY_S, VerifiedToken

STATE_FAILURES = "piigate_state_failures_total"
DEFAULT_TIMEOUT_S = 0.25


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one profile asks of the store, worked out once."""

    tag: str
    caller_rate: Rate | None
    subject_rate: Rate | None
    distinct: DistinctCap | None
    one_time: bool
    fail_open: bool
    actor_rate: Rate | None = None
    actor_distinct: DistinctCap | None = None


class AbuseGuard:
    """Admits or refuses a decided request under its profile's abuse limits."""

    def __init__(
        self,
        profiles: Iterable[Profile],
        replay: ReplayGuard,
        *,
        store: LimitStore | None = None,
        subject_key: bytes | None = None,
        metrics: GatewayMetrics | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        state_health: health.StateHealth | None = None,
    ) -> None:
        keys = StateKeys(subject_key or secrets.token_bytes(32))
        self._keys = keys
        self._store: LimitStore = store or MemoryStore(replay)
        self._timeout_s = timeout_s
        self._metrics = metrics
        self._health = state_health
        self._plans = {p.name: plan for p in profiles if (plan := _plan(p, keys)) is not None}

    @classmethod
    def from_config(cls, profiles: Iterable[Profile], state: StateConfig,
                    clock: Callable[[], float],
                    metrics: GatewayMetrics | None = None) -> AbuseGuard:
        """The guard `[state]` asks for: in memory, or on the shared Redis."""
        replay = ReplayGuard(clock)
        if state.redis is None:
            return cls(profiles, replay, subject_key=state.subject_key, metrics=metrics)
        from piigate.limits.redis_store import RedisStore  # only a redis gateway needs it

        state_health = health.StateHealth()
        observe = metrics.state_store_call if metrics is not None else None
        return cls(profiles, replay, store=RedisStore(state.redis, state_health, observe),
                   subject_key=state.subject_key, metrics=metrics,
                   timeout_s=state.redis.command_timeout_s, state_health=state_health)

    async def admit(
        self, profile: Profile, caller: Caller, token: VerifiedToken, now: float,
        timeout_s: float | None = None, *, subject: tuple[str, str] | None = None,
        actor: tuple[str, str] | None = None,
    ) -> None:
        """Raise RateLimited, DistinctSubjectsExceeded, TokenReplayed or StateUnavailable;
        else admit. `token` is the token presented (its `jti` is the one-time marker);
        `subject` (iss, sub) is whose data, by default the token's own; `actor` (iss, sub)
        who acts for them, if anyone. The store call takes at most the configured command
        timeout, and at most `timeout_s` (what the call's deadline leaves); the memory
        store never waits."""
        plan = self._plans.get(profile.name)
        if plan is None:
            return
        once = None
        if plan.one_time:
            if token.jti is None:
                raise TokenClaimMissing({"claim": "jti", "token_role": "subject"})
            # Remembered past `exp` by the largest leeway: verification still accepts the
            # token that long, so forgetting it at `exp` would let it be replayed.
            once = OneTimeUse(self._keys.token(token.issuer, token.jti),
                              token.expires_at + MAX_LEEWAY_S, token.issuer, token.jti)
        whose = subject or (token.issuer, token.subject)
        admission = Admission(
            profile=profile.name, profile_tag=plan.tag, now=now,
            caller=self._keys.caller(_caller_id(caller)),
            subject=self._keys.subject(*whose),
            caller_rate=plan.caller_rate, subject_rate=plan.subject_rate,
            distinct=plan.distinct, once=once,
            actor=self._keys.actor(*actor) if actor is not None else None,
            actor_rate=plan.actor_rate, actor_distinct=plan.actor_distinct,
        )
        try:
            verdict = await self._store.admit(
                admission, self._timeout_s if timeout_s is None else min(self._timeout_s,
                                                                         timeout_s))
        except StoreFailure:
            self._store_failed(profile.name, plan)
            return
        if verdict.refused in ("caller", "subject", "actor"):
            raise RateLimited(verdict.retry_after_s,
                              {"profile": profile.name, "limit": str(verdict.refused)})
        if verdict.refused in ("distinct", "actor_distinct"):
            raise DistinctSubjectsExceeded({
                "profile": profile.name,
                "limit": "actor" if verdict.refused == "actor_distinct" else "caller"})
        if verdict.refused == "replayed":
            raise TokenReplayed({"token_role": "subject"})

    def _store_failed(self, profile: str, plan: _Plan) -> None:
        """Fail open (return) only where the profile allows it; one-time tokens never."""
        admitted = plan.fail_open and not plan.one_time
        if self._metrics is not None:
            self._metrics.state_failure(profile, "admitted" if admitted else "refused")
        if not admitted:
            raise StateUnavailable({"profile": profile})

    async def watch(self, health_servicer: health.HealthSetter) -> None:
        """Keep the gRPC health service `piigate.state` current (shared store only)."""
        if self._health is not None:
            await health.watch(self._store, self._health, health_servicer, self._timeout_s)

    @property
    def state_health(self) -> health.StateHealth | None:
        """The shared store's health (None for the memory store), for metrics."""
        return self._health

    async def aclose(self) -> None:
        await self._store.aclose()


def _plan(profile: Profile, keys: StateKeys) -> _Plan | None:
    limits = profile.limits
    if limits is None and not profile.one_time_tokens:
        return None
    caller_rate = subject_rate = distinct = actor_rate = actor_distinct = None
    if limits is not None:
        if limits.actor_per_s is not None:
            actor_rate = Rate(limits.actor_per_s, limits.actor_burst)
        if limits.actor_distinct_subjects is not None:
            actor_distinct = DistinctCap(limits.actor_distinct_subjects, limits.distinct_window_s)
        if limits.caller_per_s is not None:
            caller_rate = Rate(limits.caller_per_s, limits.caller_burst)
        if limits.subject_per_s is not None:
            subject_rate = Rate(limits.subject_per_s, limits.subject_burst)
        if limits.distinct_subjects is not None:
            distinct = DistinctCap(limits.distinct_subjects, limits.distinct_window_s)
    if caller_rate is None and subject_rate is None and distinct is None and \
            actor_rate is None and actor_distinct is None and not profile.one_time_tokens:
        return None
    return _Plan(
        tag=keys.profile(profile.name), caller_rate=caller_rate, subject_rate=subject_rate,
        distinct=distinct, one_time=profile.one_time_tokens,
        fail_open=limits is not None and limits.on_store_failure == "fail_open",
        actor_rate=actor_rate, actor_distinct=actor_distinct,
    )


def _caller_id(caller: Caller) -> str:
    if caller.client_id is not None:
        return caller.client_id
    peer = caller.peer
    return (peer.spiffe_id or ",".join(peer.uri_sans + peer.dns_sans)) if peer else "-"
