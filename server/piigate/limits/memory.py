"""The in-process store (`[state] backend = "memory"`, the default): the pure buckets and
windows of `piigate.limits.ratelimit` and the `jti` memory of `piigate.limits.replay`.

Nothing here awaits: `admit` answers at once. Each process (each `--workers` worker, each
replica) keeps its own, so limits and one-time tokens hold per process only.
"""

from __future__ import annotations

from piigate.errors import TokenReplayed
from piigate.limits.ratelimit import DistinctSubjectWindow, Rate, RateLimiter
from piigate.limits.replay import ReplayGuard
from piigate.limits.store import ADMITTED, Admission, DistinctCap, Verdict

# A limit that is not configured: so generous it never binds.
_UNLIMITED = Rate(1e9, 1_000_000_000)


class MemoryStore:
    """Buckets and windows per profile, created on a profile's first request."""

    def __init__(self, replay: ReplayGuard) -> None:
        self._replay = replay
        self._limiters: dict[str, RateLimiter] = {}
        self._windows: dict[tuple[str, str], DistinctSubjectWindow] = {}

    async def admit(self, admission: Admission, timeout_s: float) -> Verdict:
        return self.admit_now(admission)

    def admit_now(self, a: Admission) -> Verdict:
        """The same checks, synchronously (see `piigate.limits.store` for the order)."""
        caller_key, subject_key = (a.profile, a.caller), (a.profile, a.subject)
        actor_key = (a.profile, a.actor) if a.actor is not None else None
        actor_rate = a.actor_rate if actor_key is not None else None
        if a.caller_rate is not None or a.subject_rate is not None or actor_rate is not None:
            limiter = self._limiter(a)
            decision = limiter.check(caller_key, subject_key, a.now, actor_key)
            if not decision.allowed:
                assert decision.limit is not None
                return Verdict(decision.limit, decision.retry_after_s)
        if a.distinct is not None:
            window = self._window(a.profile, "caller", a.distinct)
            if not window.observe(caller_key, a.subject, a.now):
                return Verdict("distinct")
        if a.actor_distinct is not None and actor_key is not None:
            window = self._window(a.profile, "actor", a.actor_distinct)
            if not window.observe(actor_key, a.subject, a.now):
                return Verdict("actor_distinct")
        if a.once is not None:
            try:
                self._replay.first_use(a.once.issuer, a.once.jti, a.once.remember_until)
            except TokenReplayed:
                return Verdict("replayed")
        return ADMITTED

    async def ping(self, timeout_s: float) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _limiter(self, a: Admission) -> RateLimiter:
        limiter = self._limiters.get(a.profile)
        if limiter is None:
            limiter = self._limiters[a.profile] = RateLimiter(
                caller=a.caller_rate or _UNLIMITED, subject=a.subject_rate or _UNLIMITED,
                actor=a.actor_rate,
            )
        return limiter

    def _window(self, profile: str, whose: str, cap: DistinctCap) -> DistinctSubjectWindow:
        window = self._windows.get((profile, whose))
        if window is None:
            window = self._windows[(profile, whose)] = DistinctSubjectWindow(
                cap.max_subjects, cap.window_s
            )
        return window
