"""The request's path, top to bottom, in the order it travels:

    1 caller → 2 profile → (batch size) → 3 subject token → 4 decision
    → 5 vault token claim → 6 abuse limits → 7 vault → 8 shaping → 9 audit

Each stage is its own module; this one strings them together inside the audit envelopes
that make "every decision is audited" hold by construction:

- the caller envelope covers stages 1–2 and the request's own checks (a batch that is
  empty or too large is refused only once the caller is known, and audited);
- one item envelope per subject token covers stages 3–8, whatever raises in them;
- each envelope ends in exactly one call to the recorder (`piigate.audit.recorder`),
  which writes the event, and PII is returned only after its event is written.

A single Detokenize is a call with one item: single and batch share every line. The
pipeline knows nothing of gRPC: the transport gives it a `Call` and gets back each item's
`Disclosure` or `GatewayError` (`piigate.transport.boundary` turns those into statuses).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from piigate.audit.event import AuditFacts
from piigate.audit.recorder import AuditRecorder
from piigate.config import IssuerConfig, Profile
from piigate.errors import (
    BatchTooLarge,
    CallCancelled,
    GatewayError,
    IssuerKeysUnavailable,
    RequestInvalid,
)
from piigate.identity.caller import Caller, CallerAuthenticator
from piigate.identity.peer import PeerIdentity
from piigate.identity.pii_claim import pii_token_id
from piigate.identity.subject import refuse_denied_claims, verify_subject
from piigate.limits.abuse import AbuseGuard
from piigate.policy.decision import Checks, DisclosureRequest, Plan, SubjectFacts, plan_checks
from piigate.policy.profiles import ProfileIndex
from piigate.policy.shaping import Disclosure, disclose
from piigate.tokens.claims import claim_values, granted_scopes
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier
from piigate.vault.binding import binding_tag
from piigate.vault.coalescing import Vault
from piigate.vault.reads import CallReads, Read

Outcome = Disclosure | GatewayError
T = TypeVar("T")

# What the gateway keeps of the caller's deadline for its own answer and audit write, so
# a slow vault ends in the gateway's own VAULT_TIMEOUT (audited) rather than in the
# caller's bare DEADLINE_EXCEEDED: this much, or a quarter of a short deadline.
ANSWER_RESERVE_S = 0.1


@dataclass(frozen=True, slots=True)
class Call:
    """One RPC as the transport describes it: who sent it, for which subject tokens,
    asking for what, and how long the caller will wait."""

    metadata: Sequence[tuple[str, str | bytes]]
    peer: PeerIdentity | None
    time_remaining_s: float | None  # None: no client deadline
    subject_tokens: tuple[str, ...]
    request: DisclosureRequest
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    request_timeout_s: float
    vault_timeout_s: float
    max_batch_size: int


@dataclass(frozen=True, slots=True)
class Decision:
    """Stages 3–5 for one subject token: whose token, which plan, which vault token."""

    subject: VerifiedToken
    issuer: IssuerConfig
    token_id: str
    plan: Plan


class SubjectDecider:
    """Stages 3–5, the decision sequence for one subject token: the gateway runs it for
    every item, and `piigate explain` runs the very same code with a report."""

    def __init__(self, verifier: TokenVerifier, issuers: Mapping[str, IssuerConfig]) -> None:
        self._verifier = verifier
        self._issuers = issuers

    async def decide(
        self,
        profile: Profile,
        subject_token: str,
        request: DisclosureRequest,
        now: float,
        facts: AuditFacts,
        checks: Checks | None = None,
    ) -> Decision:
        """The decision, or the first refusal raised; `facts` learns each stage's result
        as it is known, so a later refusal's event still says who and what."""
        c = checks or Checks()
        subject = await verify_subject(self._verifier, subject_token)
        issuer = self._issuers[subject.issuer_name]
        facts.subject_iss, facts.subject_sub = issuer.issuer, subject.subject
        facts.jti = subject.jti
        c.note("subject token verified", f"issuer {issuer.name}, sub {subject.subject}")
        c.run("no deny-listed claims", refuse_denied_claims, subject.claims, issuer.denied_claims)
        subject_facts = SubjectFacts(
            audiences=claim_values(subject.claims, issuer.audience_claims),
            scopes=granted_scopes(subject.claims, issuer.scope_claims),
            claims=subject.claims,
        )
        # Permission before existence (AIP-193): a token for another audience (an ID
        # token, say) is refused as such, whatever claims it carries.
        plan = plan_checks(c, profile, subject_facts, request, now)
        token_id = c.run("vault token claim present", pii_token_id, subject.claims,
                         issuer.pii_token_claim)
        facts.token_id = token_id
        c.done()
        assert plan is not None  # done() raised otherwise
        assert token_id is not None
        facts.reason, facts.adhoc_reason = plan.reason, plan.adhoc_reason
        return Decision(subject, issuer, token_id, plan)


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
    ) -> None:
        self._callers = callers
        self._profiles = profiles
        self._decider = decider
        self._vault = vault
        self._recorder = recorder
        self._abuse = abuse
        self._limits = limits
        self._clock = clock

    async def run(self, call: Call) -> list[Outcome]:
        """Each subject token's outcome, in order. A refusal of the call itself (caller,
        profile, batch size) is raised; each token's failure is returned in its place."""
        started = self._clock()
        facts = AuditFacts(_request_id(), started)
        if call.batch:
            facts.batch_id = facts.request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget(call)
        try:
            caller, profile = await _within(deadline, self._authorize(call, facts))
        except BaseException as exc:
            raise await self._record(facts, exc) from None
        reads = CallReads(self._vault, len(call.subject_tokens),
                          min(deadline, loop.time() + self._limits.vault_timeout_s))
        if len(call.subject_tokens) == 1:
            token = call.subject_tokens[0]
            return [await self._item(call, caller, profile, token, facts.for_item(_request_id()),
                                     reads, _Turn(None, loop.create_future()), deadline)]
        turns = _turns(loop, len(call.subject_tokens))
        return list(await asyncio.gather(*(
            self._item(call, caller, profile, token, facts.for_item(_request_id()), reads, turn,
                       deadline)
            for token, turn in zip(call.subject_tokens, turns, strict=True))))

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
        if not call.subject_tokens:
            raise RequestInvalid({"detail": "no subject tokens"})
        if len(call.subject_tokens) > self._limits.max_batch_size:
            raise BatchTooLarge({"max": str(self._limits.max_batch_size)})
        return caller, profile

    async def _item(
        self, call: Call, caller: Caller, profile: Profile, subject_token: str,
        facts: AuditFacts, reads: CallReads, turn: _Turn, deadline: float,
    ) -> Outcome:
        """Stages 3–8 for one subject token, and its one audit event (written in the
        call's item order, so a batch reads in order in the trail)."""
        asked = False
        try:
            now = self._clock()
            decision = await _within(deadline, self._decider.decide(
                profile, subject_token, call.request, now, facts))
            await self._abuse.admit(profile, caller, decision.subject, now, reads.time_left())
            read = Read(decision.plan, decision.token_id, self._binding(profile, decision),
                        facts.batch_id or facts.request_id)
            asked = True  # from here on the read accounts for this item, whatever happens
            fields = await reads.read(read)
            disclosure = disclose(decision.plan, decision.token_id, fields)
        except BaseException as exc:
            if not asked:
                reads.drop()
            return await self._record(facts, exc, turn)
        return await turn.take(self._recorder.allowed(facts, disclosure))

    async def _record(
        self, facts: AuditFacts, exc: BaseException, turn: _Turn | None = None
    ) -> GatewayError:
        """The one audit event of a refused or failed envelope. A cancelled call (the
        caller left) is recorded too, beyond the reach of a second cancellation, and the
        cancellation then goes on."""
        turn = turn or _Turn(None, asyncio.get_running_loop().create_future())
        if isinstance(exc, asyncio.CancelledError):
            await asyncio.shield(turn.take(self._recorder.refused(facts, CallCancelled())))
            raise exc
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not ours
            raise exc
        return await turn.take(self._recorder.refused(facts, exc))

    # --- helpers ----------------------------------------------------------------------
    @staticmethod
    def _binding(profile: Profile, decision: Decision) -> str | None:
        if not profile.bind_tokens:
            return None
        # The vault itself then refuses a token tagged for someone else.
        issuer = decision.issuer
        return binding_tag(issuer.issuer, decision.subject.subject, issuer.binding_key)

    def _budget(self, call: Call) -> float:
        """What the call's own work may take: the server-side cap, and the caller's
        deadline less the reserve for the answer and its audit write. The vault call gets
        at most this and its own timeout."""
        budget = self._limits.request_timeout_s
        remaining = call.time_remaining_s
        if remaining is not None:
            budget = min(budget, remaining - min(ANSWER_RESERVE_S, remaining / 4))
        return max(0.0, budget)


async def _within(deadline: float, stage: Awaitable[T]) -> T:
    """`stage` (token verification, whose only waits are key fetches) by `deadline`: a
    key set that cannot be had in time is ISSUER_KEYS_UNAVAILABLE, answered and audited
    before the caller's own deadline, never a bare DEADLINE_EXCEEDED."""
    try:
        async with asyncio.timeout_at(deadline):
            return await stage
    except TimeoutError:
        raise IssuerKeysUnavailable({"detail": "not within the call's budget"}) from None


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


def _turns(loop: asyncio.AbstractEventLoop, n: int) -> list[_Turn]:
    done = [loop.create_future() for _ in range(n)]
    return [_Turn(done[i - 1] if i else None, done[i], shielded=True) for i in range(n)]


def _request_id() -> str:
    """128 random bits as 32 hex digits (uuid4's strength, without building a UUID)."""
    return os.urandom(16).hex()
