"""What the abuse stage asks of its state, and what it gets back: one `Admission` per
request (every check its profile needs, in order), one `Verdict`, from a `LimitStore`.

Two stores answer it with the same semantics: `piigate.limits.memory` (this process only)
and `piigate.limits.redis` (shared by every replica, one round trip). The checks run in
this order and stop at the first refusal; what passed before it stays counted, in both:

1. the caller's, the subject's and (when the call has one) the actor's token buckets:
   each needs a token, then each loses one (a refusal takes from none and names the
   latest of the waits);
2. the caller's distinct-subject window, then the actor's: a subject seen within the
   window is always allowed, a new one only below the cap (and then it is recorded);
3. the one-time marker of the token's `jti`: set if absent, else the call is a replay.

The actor is whoever acts for the subject: the support agent of an `on_behalf_of` call,
the practitioner of a `launch_patient` one. Its limits are its own, beside the caller's:
one support console serves many agents, and each agent's reach is capped too.

Everything that names a caller, a user or a token here is a keyed hash
(`StateKeys`), so neither store holds an identifier that could be read back.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal, Protocol

from piigate.limits.ratelimit import Rate, hash_subject

Refusal = Literal["caller", "subject", "actor", "distinct", "actor_distinct", "replayed"]
HASH_HEX = 32  # 128 bits: collisions are out of reach, and store keys stay short


@dataclass(frozen=True, slots=True)
class DistinctCap:
    max_subjects: int
    window_s: float


@dataclass(frozen=True, slots=True)
class OneTimeUse:
    """A subject token to be used once: remembered until `remember_until` (its `exp` plus
    the largest leeway any issuer may have, so it is never forgotten while still valid)."""

    key: str  # keyed hash of (iss, jti)
    remember_until: float
    issuer: str = field(repr=False)
    jti: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Admission:
    """Every check one request needs; None turns a check off."""

    profile: str
    profile_tag: str  # keyed hash of the profile name (store keys)
    now: float
    caller: str  # keyed hash of the caller's id
    subject: str  # keyed hash of the subject's iss + sub
    caller_rate: Rate | None = None
    subject_rate: Rate | None = None
    distinct: DistinctCap | None = None
    once: OneTimeUse | None = None
    actor: str | None = None  # keyed hash of the actor's iss + sub; None: no actor
    actor_rate: Rate | None = None  # both actor limits apply only with an actor
    actor_distinct: DistinctCap | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    refused: Refusal | None = None
    retry_after_s: float = 0.0  # for a rate refusal: when a retry would pass


ADMITTED = Verdict()


class StoreFailure(Exception):
    """The store did not answer usably (down, slow beyond the budget, garbage). Internal:
    the abuse stage turns it into each control's configured outcome. `kind` is a fixed
    word for metrics and logs, never the store's own message."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class LimitStore(Protocol):
    async def admit(self, admission: Admission, timeout_s: float) -> Verdict:
        """Run the admission's checks, within `timeout_s`, or raise StoreFailure."""
        ...

    async def ping(self, timeout_s: float) -> None:
        """Raise StoreFailure unless the store answers within `timeout_s`."""
        ...

    async def aclose(self) -> None: ...


class StateKeys:
    """Keyed hashes (HMAC-SHA-256 under the subject key) for everything a store records."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _hash(self, kind: str, *parts: str) -> str:
        # Each part is length-prefixed, so no two different tuples give one message.
        message = kind + "".join(f"{len(p)}:{p}" for p in parts)
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()[:HASH_HEX]

    def profile(self, name: str) -> str:
        return self._hash("profile", name)[:16]

    def caller(self, caller_id: str) -> str:
        return self._hash("caller", caller_id)

    def subject(self, issuer: str, subject: str) -> str:
        return hash_subject(issuer, subject, self._secret)[:HASH_HEX]

    def actor(self, issuer: str, subject: str) -> str:
        return self._hash("actor", issuer, subject)

    def token(self, issuer: str, jti: str) -> str:
        return self._hash("jti", issuer, jti)
