"""The request's path, top to bottom, in the order it travels:

    caller → profile → subject token → pii_token claim → decision → abuse limits → vault
    → shaping → audit

Each stage is its own module; this one only strings them together and keeps the audit
trail of what each stage learned, so that every outcome, allowed or denied, is written
as one event. PII is returned only after the event is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from piigate.audit.event import AuditEvent, AuditSink, FieldDisclosure
from piigate.config import IssuerConfig, Profile
from piigate.errors import (
    DistinctSubjectsExceeded,
    GatewayError,
    TokenBindingMismatch,
    TokenCarriesDeniedClaim,
    VaultTokenNotFound,
)
from piigate.identity.caller import Caller, CallerAuthenticator
from piigate.identity.peer import PeerIdentity
from piigate.identity.pii_claim import pii_token_id
from piigate.identity.subject import refuse_denied_claims, verify_subject
from piigate.limits.abuse import AbuseGuard
from piigate.policy.decision import DisclosureRequest, Plan, SubjectFacts, decide
from piigate.policy.profiles import ProfileIndex
from piigate.policy.shaping import DisclosedValue, shape
from piigate.tokens.claims import claim_values, granted_scopes
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier
from piigate.transport.metrics import Metrics
from piigate.vault.binding import binding_tag
from piigate.vault.client import DetokenizeQuery, VaultClient, vault_timeout
from piigate.vault.coalescing import CoalescingVault

log = logging.getLogger(__name__)

# Failures that are the caller's (or its user's) doing are "denied"; the rest "failed".
_DENIED_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


# Refusals that are events of their own kind in the audit trail (and alerts in a SIEM).
_EVENTS: dict[type[GatewayError], str] = {
    TokenCarriesDeniedClaim: "pii_in_token",
    DistinctSubjectsExceeded: "harvesting_suspected",
    TokenBindingMismatch: "binding_failure",
}


@dataclass(frozen=True, slots=True)
class Disclosure:
    """The successful outcome of one request."""

    token_id: str
    profile: str
    reason: str
    fields: tuple[DisclosedValue, ...]
    notes: Mapping[str, str]  # field -> why it was disclosed in a lesser form


@dataclass(slots=True)
class _Trail:
    """What the stages have learned so far, for the audit event."""

    request_id: str
    started: float
    facts: dict[str, Any] = field(default_factory=dict)  # AuditEvent fields learned so far

    def event(
        self,
        outcome: str,
        error_reason: str | None = None,
        fields: Sequence[FieldDisclosure] = (),
        event: str | None = None,
    ) -> AuditEvent:
        return AuditEvent(
            time=self.started,
            request_id=self.request_id,
            outcome=outcome,
            fields=tuple(fields),
            error_reason=error_reason,
            event=event or "disclosure",
            **self.facts,
        )

    def fork(self, started: float) -> _Trail:
        """A trail for one item of a request: the caller's facts, its own request id."""
        return _Trail(_request_id(), started, dict(self.facts))


def _request_id() -> str:
    """128 random bits as 32 hex digits (uuid4's strength, without building a UUID)."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class _Item:
    """One subject token's way through the stages."""

    trail: _Trail
    token_id: str | None = None
    plan: Plan | None = None
    binding: str | None = None
    outcome: Disclosure | GatewayError | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    request_timeout_s: float
    vault_timeout_s: float


class DetokenizationPipeline:
    """Runs Detokenize requests, one subject token or many, through every stage."""

    def __init__(
        self,
        callers: CallerAuthenticator,
        profiles: ProfileIndex,
        verifier: TokenVerifier,
        issuers: Mapping[str, IssuerConfig],
        vault: VaultClient | CoalescingVault,
        audit: AuditSink,
        limits: Limits,
        clock: Callable[[], float],
        metrics: Metrics,
        abuse: AbuseGuard,
    ) -> None:
        self._callers = callers
        self._profiles = profiles
        self._verifier = verifier
        self._issuers = issuers
        self._vault = vault
        self._audit = audit
        self._limits = limits
        self._clock = clock
        self._metrics = metrics
        self._abuse = abuse

    async def detokenize(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        subject_token: str,
        request: DisclosureRequest,
        time_remaining_s: float | None,
        peer: PeerIdentity | None = None,
    ) -> Disclosure:
        """One subject token; any failure is raised."""
        (outcome,) = await self.detokenize_many(
            metadata, (subject_token,), request, time_remaining_s, peer
        )
        if isinstance(outcome, GatewayError):
            raise outcome
        return outcome

    async def detokenize_many(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        subject_tokens: Sequence[str],
        request: DisclosureRequest,
        time_remaining_s: float | None,
        peer: PeerIdentity | None = None,
    ) -> list[Disclosure | GatewayError]:
        """Many subject tokens under one caller and one request shape. The caller's own
        failure is raised; each token's failure is returned in its place. Every token gets
        its own audit event, written before any of its data is returned."""
        started = self._clock()
        caller_trail = _Trail(_request_id(), started)
        if len(subject_tokens) > 1:
            caller_trail.facts["batch_id"] = caller_trail.request_id
        try:
            caller, profile = await self._authorize(caller_trail, metadata, peer)
        except Exception as exc:
            await self._record_failure(caller_trail, exc)
            raise
        items = [_Item(caller_trail.fork(started)) for _ in subject_tokens]
        now = self._clock()
        for item, token in zip(items, subject_tokens, strict=True):
            try:
                self._decide(item, caller, profile, await self._subject(item, token), request,
                             now)
            except GatewayError as exc:
                item.outcome = exc
            except Exception as exc:
                await self._record_failure(item.trail, exc)
                raise
        await self._read_all([i for i in items if i.outcome is None], time_remaining_s)
        return [await self._finish(item) for item in items]

    # --- stages ---------------------------------------------------------------------
    async def _authorize(
        self, trail: _Trail, metadata: Sequence[tuple[str, str | bytes]],
        peer: PeerIdentity | None,
    ) -> tuple[Caller, Profile]:
        caller = await self._callers.identify(metadata, peer)
        trail.facts.update(caller=caller.client_id, caller_issuer=caller.issuer_name)
        if peer is not None:
            trail.facts["caller_peer"] = peer.spiffe_id or ",".join(peer.uri_sans + peer.dns_sans)
        profile = self._profiles.select(caller)
        trail.facts["profile"] = profile.name
        return caller, profile

    async def _subject(self, item: _Item, subject_token: str) -> VerifiedToken:
        subject = await verify_subject(self._verifier, subject_token)
        issuer = self._issuers[subject.issuer_name]
        item.trail.facts.update(
            subject_iss=issuer.issuer, subject_sub=subject.subject, jti=subject.jti
        )
        refuse_denied_claims(subject.claims, issuer.denied_claims)
        item.token_id = pii_token_id(subject.claims, issuer.pii_token_claim)
        item.trail.facts["token_id"] = item.token_id
        return subject

    def _decide(
        self, item: _Item, caller: Caller, profile: Profile, subject: VerifiedToken,
        request: DisclosureRequest, now: float,
    ) -> None:
        issuer = self._issuers[subject.issuer_name]
        facts = SubjectFacts(
            audiences=claim_values(subject.claims, issuer.audience_claims),
            scopes=granted_scopes(subject.claims, issuer.scope_claims),
            claims=subject.claims,
        )
        item.plan = decide(profile, facts, request, now)
        item.trail.facts.update(reason=item.plan.reason, adhoc_reason=item.plan.adhoc_reason)
        self._abuse.admit(profile, caller, subject, now)
        if profile.bind_tokens:
            # The vault itself then refuses a token tagged for someone else.
            item.binding = binding_tag(issuer.issuer, subject.subject, issuer.binding_key)

    async def _read_all(self, items: list[_Item], time_remaining_s: float | None) -> None:
        """One vault call per group of items that can share it: same properties, reason
        and key, and no binding tag (tags are intersected, so each bound item asks alone).
        A group's failure is each of its items' failure."""
        groups: dict[tuple[object, ...], list[_Item]] = {}
        for item in items:
            plan = item.plan
            assert plan is not None  # set by _decide
            alone = id(item) if item.binding else None
            key = (plan.vault_props, plan.reason, plan.adhoc_reason, alone)
            groups.setdefault(key, []).append(item)
        timeout = vault_timeout(
            time_remaining_s, self._limits.request_timeout_s, self._limits.vault_timeout_s
        )
        await asyncio.gather(*(self._read_group(g, timeout) for g in groups.values()))

    async def _read_group(self, group: list[_Item], timeout_s: float) -> None:
        first = group[0]
        plan = first.plan
        assert plan is not None
        if not plan.vault_props:
            # Everything is redacted: nothing is read, so nothing is asked of the vault
            # (an empty `props` would make the vault return every property).
            for item in group:
                item.outcome = self._disclosure(item, {})
            return
        query = DetokenizeQuery(
            collection=plan.profile.collection,
            token_ids=tuple(dict.fromkeys(i.token_id for i in group if i.token_id)),
            props=plan.vault_props,
            reason=plan.reason,
            adhoc_reason=plan.adhoc_reason,
            api_key=plan.profile.vault_api_key,
            tags=(first.binding,) if first.binding else (),
            # Joins the vault's own audit log with piigate's.
            custom_audit=f"piigate request {_request_ref(first.trail)}",
        )
        try:
            found = await self._vault.detokenize(query, timeout_s)
        except GatewayError as exc:
            for item in group:
                item.outcome = exc
            return
        for item in group:
            fields = found.get(item.token_id or "")
            if fields is None:
                # With a binding tag, "no such token" and "another user's token" look the
                # same on purpose: the vault does not reveal which.
                item.outcome = TokenBindingMismatch() if item.binding else VaultTokenNotFound()
            else:
                item.outcome = self._disclosure(item, fields)

    @staticmethod
    def _disclosure(item: _Item, fields: Mapping[str, object]) -> Disclosure:
        plan = item.plan
        assert plan is not None
        assert item.token_id is not None
        return Disclosure(item.token_id, plan.profile.name, plan.reason, shape(plan, fields),
                          plan.notes)

    # --- audit ----------------------------------------------------------------------
    async def _finish(self, item: _Item) -> Disclosure | GatewayError:
        outcome = item.outcome
        if isinstance(outcome, GatewayError):
            await self._record_failure(item.trail, outcome)
            return outcome
        assert outcome is not None
        fields = [FieldDisclosure(f.name, f.disclosure, outcome.notes.get(f.name))
                  for f in outcome.fields]
        event = item.trail.event("allowed", fields=fields)
        try:
            await self._audit.write(event)  # fail closed: no event, no data
        except GatewayError as exc:
            self._count(event.profile, "failed", exc.reason)
            return exc
        self._count(event.profile, "allowed", "OK")
        return outcome

    async def _record_failure(self, trail: _Trail, exc: Exception) -> None:
        """Count and audit a refusal; a sink failure must not mask the original error (no
        PII is being returned), but it is logged for the operator."""
        if isinstance(exc, TokenCarriesDeniedClaim):
            # An alert of its own: the identity provider is leaking PII into tokens.
            self._metrics.inc("piigate_denied_claims_total",
                              issuer=str(trail.facts.get("subject_iss")),
                              claim=exc.metadata.get("claim", "-"))
        if isinstance(exc, GatewayError):
            outcome = "denied" if exc.code in _DENIED_CODES else "failed"
            event = trail.event(outcome, exc.reason, event=_EVENTS.get(type(exc)))
        else:
            event = trail.event("failed", "INTERNAL")
        self._count(event.profile, event.outcome, event.error_reason or "INTERNAL")
        try:
            await self._audit.write(event)
        except GatewayError:
            log.error("audit sink failed while recording a %s outcome", event.outcome)

    def _count(self, profile: str | None, outcome: str, reason: str) -> None:
        self._metrics.inc(
            "piigate_decisions_total", outcome=outcome, reason=reason, profile=profile or "-"
        )


def _request_ref(trail: _Trail) -> str:
    """What the vault's audit log records to join with piigate's: the batch or request id."""
    return str(trail.facts.get("batch_id") or trail.request_id)
