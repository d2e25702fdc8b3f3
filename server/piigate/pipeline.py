"""The request's path, top to bottom, in the order it travels:

    caller → profile → subject token → pii_token claim → decision → abuse limits → vault
    → shaping → audit

Each stage is its own module; this one only strings them together and keeps the audit
trail of what each stage learned, so that every outcome, allowed or denied, is written
as one event. PII is returned only after the event is written.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from piigate.abuse import AbuseGuard
from piigate.audit import AuditEvent, AuditSink, FieldDisclosure
from piigate.binding import binding_tag
from piigate.caller import CallerAuthenticator
from piigate.claims import claim_values, granted_scopes
from piigate.config import IssuerConfig
from piigate.errors import (
    DistinctSubjectsExceeded,
    GatewayError,
    TokenBindingMismatch,
    TokenCarriesDeniedClaim,
    VaultTokenNotFound,
)
from piigate.metrics import Metrics
from piigate.peer import PeerIdentity
from piigate.pii_claim import pii_token_id
from piigate.policy import DisclosureRequest, Plan, ProfileIndex, SubjectFacts, decide
from piigate.shaping import DisclosedValue, shape
from piigate.subject import refuse_denied_claims, verify_subject
from piigate.tokens import TokenVerifier
from piigate.vault import DetokenizeQuery, VaultClient, vault_timeout

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


@dataclass(frozen=True, slots=True)
class Limits:
    request_timeout_s: float
    vault_timeout_s: float


class DetokenizationPipeline:
    """Runs one Detokenize request through every stage."""

    def __init__(
        self,
        callers: CallerAuthenticator,
        profiles: ProfileIndex,
        verifier: TokenVerifier,
        issuers: Mapping[str, IssuerConfig],
        vault: VaultClient,
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
        trail = _Trail(request_id=uuid.uuid4().hex, started=self._clock())
        try:
            disclosure = await self._run(
                trail, metadata, peer, subject_token, request, time_remaining_s
            )
        except GatewayError as exc:
            outcome = "denied" if exc.code in _DENIED_CODES else "failed"
            await self._record(trail.event(outcome, exc.reason, event=_EVENTS.get(type(exc))))
            raise
        except Exception:
            await self._record(trail.event("failed", "INTERNAL"))
            raise
        fields = [FieldDisclosure(f.name, f.disclosure, disclosure.notes.get(f.name))
                  for f in disclosure.fields]
        event = trail.event("allowed", fields=fields)
        try:
            await self._audit.write(event)  # fail closed: no event, no data
        except GatewayError as exc:
            self._count(event.profile, "failed", exc.reason)
            raise
        self._count(event.profile, "allowed", "OK")
        return disclosure

    async def _run(
        self,
        trail: _Trail,
        metadata: Sequence[tuple[str, str | bytes]],
        peer: PeerIdentity | None,
        subject_token: str,
        request: DisclosureRequest,
        time_remaining_s: float | None,
    ) -> Disclosure:
        caller = await self._callers.identify(metadata, peer)
        trail.facts.update(caller=caller.client_id, caller_issuer=caller.issuer_name)
        if peer is not None:
            trail.facts["caller_peer"] = peer.spiffe_id or ",".join(peer.uri_sans + peer.dns_sans)
        profile = self._profiles.select(caller)
        trail.facts["profile"] = profile.name

        subject = await verify_subject(self._verifier, subject_token)
        issuer = self._issuers[subject.issuer_name]
        trail.facts.update(subject_iss=issuer.issuer, subject_sub=subject.subject, jti=subject.jti)
        refuse_denied_claims(subject.claims, issuer.denied_claims)
        token_id = pii_token_id(subject.claims, issuer.pii_token_claim)
        trail.facts["token_id"] = token_id

        facts = SubjectFacts(
            audiences=claim_values(subject.claims, issuer.audience_claims),
            scopes=granted_scopes(subject.claims, issuer.scope_claims),
            claims=subject.claims,
        )
        now = self._clock()
        plan = decide(profile, facts, request, now)
        trail.facts.update(reason=plan.reason, adhoc_reason=plan.adhoc_reason)
        self._abuse.admit(profile, caller, subject, now)

        # For a bound profile the vault itself refuses a token tagged for someone else.
        tag = binding_tag(issuer.issuer, subject.subject) if profile.bind_tokens else None
        fields = await self._read(plan, token_id, tag, trail.request_id, time_remaining_s)
        return Disclosure(token_id, profile.name, plan.reason, shape(plan, fields), plan.notes)

    async def _read(
        self,
        plan: Plan,
        token_id: str,
        binding: str | None,
        request_id: str,
        time_remaining_s: float | None,
    ) -> Mapping[str, object]:
        props = plan.vault_props
        if not props:
            # Everything is redacted: nothing is read, so nothing is asked of the vault
            # (an empty `props` would make the vault return every property).
            return {}
        query = DetokenizeQuery(
            collection=plan.profile.collection,
            token_ids=(token_id,),
            props=props,
            reason=plan.reason,
            adhoc_reason=plan.adhoc_reason,
            api_key=plan.profile.vault_api_key,
            tags=(binding,) if binding else (),
            # Joins the vault's own audit log with piigate's.
            custom_audit=f"piigate request {request_id}",
        )
        timeout = vault_timeout(
            time_remaining_s, self._limits.request_timeout_s, self._limits.vault_timeout_s
        )
        found = await self._vault.detokenize(query, timeout)
        if token_id not in found:
            # With a binding tag, "no such token" and "another user's token" look the
            # same on purpose: the vault does not reveal which.
            raise TokenBindingMismatch() if binding else VaultTokenNotFound()
        return found[token_id]

    async def _record(self, event: AuditEvent) -> None:
        """Count and audit a refusal; a sink failure must not mask the original error (no
        PII is being returned), but it is logged for the operator."""
        self._count(event.profile, event.outcome, event.error_reason or "INTERNAL")
        try:
            await self._audit.write(event)
        except GatewayError:
            log.error("audit sink failed while recording a %s outcome", event.outcome)

    def _count(self, profile: str | None, outcome: str, reason: str) -> None:
        self._metrics.inc(
            "piigate_decisions_total", outcome=outcome, reason=reason, profile=profile or "-"
        )
