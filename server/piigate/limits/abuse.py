"""Stage 6: abuse limits, after the decision and before the vault.

Per profile: a token bucket per caller and per subject, a cap on how many different users
one caller may ask for within a window (bulk harvesting), and one-time subject tokens.
Subjects are held only as keyed hashes (`piigate.limits.ratelimit.hash_subject`) under a secret
that lives in this process alone. All state is per process and bounded.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from piigate.config import Profile
from piigate.errors import DistinctSubjectsExceeded, RateLimited, TokenClaimMissing
from piigate.identity.caller import Caller
from piigate.limits.ratelimit import DistinctSubjectWindow, Rate, RateLimiter, hash_subject
from piigate.limits.replay import ReplayGuard
from piigate.tokens.verification import VerifiedToken

# A limit that is not configured: so generous it never binds.
_UNLIMITED = Rate(1e9, 1_000_000_000)


class AbuseGuard:
    """Admits or refuses a decided request under its profile's abuse limits."""

    def __init__(self, profiles: Iterable[Profile], replay: ReplayGuard) -> None:
        self._secret = secrets.token_bytes(32)
        self._replay = replay
        self._limiters: dict[str, RateLimiter] = {}
        self._windows: dict[str, DistinctSubjectWindow] = {}
        for p in profiles:
            limits = p.limits
            if limits is None:
                continue
            if limits.caller_per_s is not None or limits.subject_per_s is not None:
                self._limiters[p.name] = RateLimiter(
                    caller=Rate(limits.caller_per_s, limits.caller_burst)
                    if limits.caller_per_s is not None else _UNLIMITED,
                    subject=Rate(limits.subject_per_s, limits.subject_burst)
                    if limits.subject_per_s is not None else _UNLIMITED,
                )
            if limits.distinct_subjects is not None:
                self._windows[p.name] = DistinctSubjectWindow(
                    limits.distinct_subjects, limits.distinct_window_s
                )

    def admit(
        self, profile: Profile, caller: Caller, subject: VerifiedToken, now: float
    ) -> None:
        """Raise RateLimited, DistinctSubjectsExceeded or TokenReplayed; else admit."""
        limiter = self._limiters.get(profile.name)
        window = self._windows.get(profile.name)
        if limiter is not None or window is not None:
            self._check_limits(profile, caller, subject, now, limiter, window)
        if profile.one_time_tokens:
            # Consumed last, when everything else has passed: a refused call must not
            # burn the user's token.
            if subject.jti is None:
                raise TokenClaimMissing({"claim": "jti", "token_role": "subject"})
            self._replay.first_use(subject.issuer, subject.jti, subject.expires_at)

    def _check_limits(
        self, profile: Profile, caller: Caller, subject: VerifiedToken, now: float,
        limiter: RateLimiter | None, window: DistinctSubjectWindow | None,
    ) -> None:
        caller_key = (profile.name, _caller_id(caller))
        subject_hash = hash_subject(subject.issuer, subject.subject, self._secret)
        if limiter is not None:
            decision = limiter.check(caller_key, (profile.name, subject_hash), now)
            if not decision.allowed:
                raise RateLimited(decision.retry_after_s,
                                  {"profile": profile.name, "limit": str(decision.limit)})
        if window is not None and not window.observe(caller_key, subject_hash, now):
            raise DistinctSubjectsExceeded({"profile": profile.name})


def _caller_id(caller: Caller) -> str:
    if caller.client_id is not None:
        return caller.client_id
    peer = caller.peer
    return (peer.spiffe_id or ",".join(peer.uri_sans + peer.dns_sans)) if peer else "-"
