"""The request's path, top to bottom, in the order it travels:

    1 caller → 2 profile → (batch size) → 3 subject (or actor) token → 4 decision
    → 5 vault selector → 6 abuse limits → 7 vault → 8 shaping → 9 audit

Each stage is its own module; this one strings them together inside the audit envelopes
that make "every decision is audited" hold by construction:

- the caller envelope covers stages 1–2 and the request's own checks (a batch that is
  empty or too large is refused only once the caller is known, and audited);
- one item envelope per item (a subject token, or a subject the caller names) covers
  stages 3–8, whatever raises in them; stages 3–5 are the profile's subject resolution
  (`piigate.identity.resolution`);
- each envelope ends in exactly one call to the recorder (`piigate.audit.recorder`),
  which writes the event, and PII is returned only after its event is written.

A single Detokenize is a call with one item: single and batch share every line. The
pipeline knows nothing of gRPC: the transport gives it a `Call` and gets back each item's
`Result`, its `Disclosure` or `GatewayError` under its audit event's request id
(`piigate.transport.boundary` turns those into statuses).

With tracing on, each stage runs in its span (`piigate.telemetry.tracing`); with it off,
each stage's hook is one check of `Tracing.on` and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import types
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from piigate.audit.event import AuditFacts
from piigate.audit.recorder import AuditRecorder
from piigate.config import Profile
from piigate.errors import (
    BatchTooLarge,
    CallCancelled,
    GatewayError,
    IssuerKeysUnavailable,
    RequestInvalid,
)
from piigate.identity.caller import Caller, CallerAuthenticator
from piigate.identity.peer import PeerIdentity
from piigate.identity.resolution import Decision, Item, Party, SubjectDecider, SubjectRef
from piigate.limits.abuse import AbuseGuard
from piigate.policy.decision import DisclosureRequest
from piigate.policy.profiles import ProfileIndex
from piigate.policy.shaping import Disclosure, disclose
from piigate.telemetry.tracing import AUDIT, DECISION, LIMITS, NO_TRACING, Tracing
from piigate.vault.coalescing import Vault
from piigate.vault.reads import CallReads, Read

__all__ = ["Call", "Decision", "DetokenizationPipeline", "Item", "Limits", "Result",
           "SubjectDecider", "SubjectRef"]

Outcome = Disclosure | GatewayError


class Result(NamedTuple):
    """One subject token's outcome, and the request id of its audit event (the caller is
    given it, to quote to support)."""

    request_id: str
    outcome: Outcome

T = TypeVar("T")

# What the gateway keeps of the caller's deadline for its own answer and audit write, so
# a slow vault ends in the gateway's own VAULT_TIMEOUT (audited) rather than in the
# caller's bare DEADLINE_EXCEEDED: this much, or a quarter of a short deadline.
ANSWER_RESERVE_S = 0.1


@dataclass(frozen=True, slots=True)
class Call:
    """One RPC as the transport describes it: who sent it, for whom (subject tokens, or
    subjects it names acting as `actor_token`'s holder), asking for what, and how long
    the caller will wait."""

    metadata: Sequence[tuple[str, str | bytes]]
    peer: PeerIdentity | None
    time_remaining_s: float | None  # None: no client deadline
    subject_tokens: tuple[str, ...]
    request: DisclosureRequest
    batch: bool = False
    subjects: tuple[SubjectRef, ...] = ()  # on_behalf_of: the customers, one item each
    actor_token: str = ""  # on_behalf_of: the acting agent's own token, for every item
    # Its audit event's (a batch's `batch_id`); born with the call, so the transport can
    # answer with it whatever happens.
    request_id: str = field(default_factory=lambda: _request_id())

    def items(self) -> tuple[Item, ...]:
        """One item per subject token, or per named subject. A single Detokenize is one
        item whatever it names (both, if it names both: the profile's subject resolution
        refuses the form it does not take)."""
        if not self.batch:
            return (Item(self.subject_tokens[0] if self.subject_tokens else "",
                         self.subjects[0] if self.subjects else None, self.actor_token),)
        return (tuple(Item(t, None, self.actor_token) for t in self.subject_tokens)
                + tuple(Item("", s, self.actor_token) for s in self.subjects))


@dataclass(frozen=True, slots=True)
class Limits:
    request_timeout_s: float
    vault_timeout_s: float
    max_batch_size: int


class DetokenizationPipeline:
    """Runs Detokenize calls, one subject token or many, through every stage."""

    def __init__(
        self,
        callers: CallerAuthenticator,
        profiles: ProfileIndex,
        decider: SubjectDecider,
        vault: Vault,
        recorder: AuditRecorder,
        abuse: AbuseGuard,
        limits: Limits,
        clock: Callable[[], float],
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._callers = callers
        self._profiles = profiles
        self._decider = decider
        self._vault = vault
        self._recorder = recorder
        self._abuse = abuse
        self._limits = limits
        self._clock = clock
        self._tracing = tracing

    async def run(self, call: Call) -> list[Result]:
        """Each subject token's outcome, in order. A refusal of the call itself (caller,
        profile, batch size) is raised (its event's id is `call.request_id`); each token's
        failure is returned in its place."""
        if self._tracing.on:
            return await self._tracing.serve(call, self._run)
        return await self._run(call)

    async def _run(self, call: Call) -> list[Result]:
        t = self._tracing
        started = self._clock()
        facts = AuditFacts(call.request_id, started)
        if call.batch:
            facts.batch_id = facts.request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget(call)
        try:
            authorize = self._authorize(call, facts)
            caller, profile = await _within(
                deadline, t.caller_stage(authorize) if t.on else authorize)
        except BaseException as exc:
            raise await self._record(facts, exc) from None
        subjects = call.items()
        reads = CallReads(self._vault, len(subjects),
                          min(deadline, loop.time() + self._limits.vault_timeout_s))
        if len(subjects) == 1:
            item = facts.for_item(_request_id() if call.batch else facts.request_id)
            return [await self._item(call, caller, profile, subjects[0], item, reads,
                                     _Turn(None, loop.create_future()), deadline)]
        turns = _turns(loop, len(subjects))
        items = (
            self._item(call, caller, profile, subject, facts.for_item(_request_id()), reads,
                       turn, deadline)
            for subject, turn in zip(subjects, turns, strict=True))
        return list(await asyncio.gather(*(map(t.item, items) if t.on else items)))

    # --- the envelopes ----------------------------------------------------------------
    async def _authorize(self, call: Call, facts: AuditFacts) -> tuple[Caller, Profile]:
        """Stages 1–2, then the call's own checks: authenticate first, then validate."""
        caller = await self._callers.identify(call.metadata, call.peer)
        facts.caller, facts.caller_issuer = caller.client_id, caller.issuer_name
        if call.peer is not None:
            facts.caller_peer = call.peer.spiffe_id or ",".join(
                call.peer.uri_sans + call.peer.dns_sans)
        profile = self._profiles.select(caller)
        facts.profile = profile.name
        if call.batch and call.subject_tokens and call.subjects:
            raise RequestInvalid({"detail": "subject_tokens or subjects, not both"})
        size = len(call.subject_tokens) + len(call.subjects) if call.batch else 1
        if not size:
            raise RequestInvalid({"detail": "no subject tokens"})
        if size > self._limits.max_batch_size:
            raise BatchTooLarge({"max": str(self._limits.max_batch_size)})
        return caller, profile

    async def _item(
        self, call: Call, caller: Caller, profile: Profile, subject: Item,
        facts: AuditFacts, reads: CallReads, turn: _Turn, deadline: float,
    ) -> Result:
        """Stages 3–8 for one item, and its one audit event (written in the call's item
        order, so a batch reads in order in the trail)."""
        t = self._tracing
        asked = False
        try:
            now = self._clock()
            decide = self._decider.decide(profile, subject, call.request, now, facts)
            decision = await _within(deadline, t.stage(DECISION, decide) if t.on else decide)
            admit = self._abuse.admit(profile, caller, decision.token, now, reads.time_left(),
                                      subject=_pair(decision.subject),
                                      actor=_pair(decision.actor))
            await (t.stage(LIMITS, admit) if t.on else admit)
            read = Read(decision.plan, decision.token_id, decision.tag,
                        facts.batch_id or facts.request_id)
            asked = True  # from here on the read accounts for this item, whatever happens
            found = await (t.vault_stage(reads.read, read) if t.on else reads.read(read))
            facts.token_id = found.token_id or None
            # A subject found by tag was named, not tokened: its vault token id stays
            # inside (the audit event has it), the caller needs no handle on it.
            disclosure = disclose(decision.plan, decision.token_id or "", found.fields)
        except BaseException as exc:
            if not asked:
                reads.drop()
            return Result(facts.request_id, await self._record(facts, exc, turn))
        outcome = await turn.take(self._audit(self._recorder.allowed(facts, disclosure)))
        return Result(facts.request_id, outcome)

    async def _record(
        self, facts: AuditFacts, exc: BaseException, turn: _Turn | None = None
    ) -> GatewayError:
        """The one audit event of a refused or failed envelope. A cancelled call (the
        caller left) is recorded too, beyond the reach of a second cancellation, and the
        cancellation then goes on."""
        turn = turn or _Turn(None, asyncio.get_running_loop().create_future())
        if isinstance(exc, asyncio.CancelledError):
            await asyncio.shield(turn.take(self._audit(
                self._recorder.refused(facts, CallCancelled()))))
            raise exc
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours
            raise exc
        return await turn.take(self._audit(self._recorder.refused(facts, exc)))

    def _audit(self, write: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """Stage 9's write, in its span when tracing is on."""
        return self._tracing.stage(AUDIT, write) if self._tracing.on else write

    # --- helpers ----------------------------------------------------------------------
    def _budget(self, call: Call) -> float:
        """What the call's own work may take: the server-side cap, and the caller's
        deadline less the reserve for the answer and its audit write. The vault call gets
        at most this and its own timeout."""
        budget = self._limits.request_timeout_s
        remaining = call.time_remaining_s
        if remaining is not None:
            budget = min(budget, remaining - min(ANSWER_RESERVE_S, remaining / 4))
        return max(0.0, budget)


async def _within(deadline: float, stage: Coroutine[Any, Any, T]) -> T:
    """`stage` (token verification, whose only waits are key fetches) by `deadline`: a
    key set that cannot be had in time is ISSUER_KEYS_UNAVAILABLE, answered and audited
    before the caller's own deadline, never a bare DEADLINE_EXCEEDED.

    The stage's first step runs before the timeout is set: most calls (cached tokens,
    known keys) finish in it without suspending, and a timeout costs a timer each (some
    3 µs). A timeout cannot cut synchronous code short anyway, so only a stage that does
    suspend needs one, and it is set there, around the rest of the stage."""
    try:
        try:
            suspended_on = stage.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # the coroutine's own T
        async with asyncio.timeout_at(deadline):
            return await _resumed(stage, suspended_on)
    except TimeoutError:
        raise IssuerKeysUnavailable({"detail": "not within the call's budget"}) from None


@types.coroutine
def _resumed(stage: Coroutine[Any, Any, T], suspended_on: Any) -> Generator[Any, Any, T]:
    """The rest of `stage`, which suspended on `suspended_on` in its first step: hand
    that to the task, pass a throw (the timeout's cancellation) on into the stage, and
    once the task resumes it, go on as `await stage` would."""
    while True:
        try:
            yield suspended_on
        except BaseException as exc:  # thrown by the task: the stage decides
            try:
                suspended_on = stage.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        return (yield from stage.__await__())


@dataclass(frozen=True, slots=True)
class _Turn:
    """An item's turn to write its event: after the item before it, before the next."""

    previous: asyncio.Future[None] | None
    mine: asyncio.Future[None]
    shielded: bool = False  # a batch's items: their own task each (see take)

    async def take(self, write: Coroutine[Any, Any, T]) -> T:
        """Write this item's event in its turn. A batch's items write in a task of their
        own, so a cancellation of the call (the caller left) while an event waits for its
        turn still leaves it written. A lone call writes inline: a task per call costs
        measurably on the hot path, and a cancellation then can only land in the sink's
        own write, which appends the line before it waits for the fsync."""
        if not self.shielded:
            return await self._write(write)
        return await asyncio.shield(self._after_previous(self.previous, write))

    async def _after_previous(
        self, previous: asyncio.Future[None] | None, write: Coroutine[Any, Any, T]
    ) -> T:
        if previous is not None:
            try:
                await previous
            except BaseException:
                write.close()
                raise
        return await self._write(write)

    async def _write(self, write: Coroutine[Any, Any, T]) -> T:
        try:
            return await write
        finally:
            if not self.mine.done():
                self.mine.set_result(None)


def _pair(party: Party | None) -> tuple[str, str] | None:
    return None if party is None else (party.issuer, party.subject)


def _turns(loop: asyncio.AbstractEventLoop, n: int) -> list[_Turn]:
    done = [loop.create_future() for _ in range(n)]
    return [_Turn(done[i - 1] if i else None, done[i], shielded=True) for i in range(n)]


def _request_id() -> str:
    """128 random bits as 32 hex digits (uuid4's strength, without building a UUID)."""
    return os.urandom(16).hex()
