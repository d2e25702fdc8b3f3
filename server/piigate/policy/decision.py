"""Stage 5: the profile decision, pure.

`decide` checks the subject token and the request against the caller's profile (chosen
in stage 2, `piigate.policy.profiles`) and returns a `Plan`: which vault properties to
read, in which form, under which reason. Checks run permission-first (audience, scope,
reason, fields), so a denied caller learns nothing about what exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from piigate.config import PIIANO_REASONS, PROPERTY_NAME, Disposition, Profile, StepUp
from piigate.errors import (
    AudienceNotAccepted,
    FieldNameInvalid,
    FieldNotAllowed,
    LaunchContextMissing,
    ReasonInvalid,
    ReasonNotAllowed,
    ScopeMissing,
    StepUpRequired,
)
from piigate.policy.smart_scopes import missing_scopes

MAX_ADHOC_REASON = 256
# Free-text purpose goes to the vault and the audit trail: printable text only, so it
# cannot forge audit lines or smuggle control characters.
ADHOC_REASON = re.compile(r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True, slots=True)
class DisclosureRequest:
    """What the caller asked for, already translated from the wire."""

    fields: tuple[str, ...]
    reason: str | None  # a Piiano reason name; None = the profile's default
    adhoc_reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to read from the vault and how to disclose it."""

    profile: Profile
    reason: str
    adhoc_reason: str | None
    fields: tuple[tuple[str, Disposition], ...]  # profile order
    # Why a field was disclosed in a lesser form than the profile's (step-up unmet).
    notes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def vault_props(self) -> tuple[str, ...]:
        """Properties to ask the vault for. Masked fields are asked as the vault's own
        `.mask` transformation, so their raw value never reaches piigate; redacted fields
        are not asked for at all."""
        props: list[str] = []
        for name, disposition in self.fields:
            if disposition == "raw":
                props.append(name)
            elif disposition == "mask":
                props.append(f"{name}.mask")
        return tuple(props)


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What the decision needs from the verified subject token, already read through its
    issuer's claim names."""

    audiences: frozenset[str]
    scopes: frozenset[str]
    claims: Mapping[str, Any]


def decide(
    profile: Profile, subject: SubjectFacts, request: DisclosureRequest, now: float
) -> Plan:
    """Check a request against `profile`; return the plan or raise. The checks run in
    this order, each its own function so `piigate explain` can report every one."""
    check_audience(profile, subject)
    check_scopes(profile, subject)
    check_launch(profile, subject)
    reason = choose_reason(profile, request)
    adhoc = check_adhoc_reason(reason, request.adhoc_reason)
    fields, notes = apply_step_up(
        profile, choose_fields(profile, request.fields), reason, subject, now
    )
    return Plan(profile, reason, adhoc, fields, MappingProxyType(notes))


def check_audience(profile: Profile, subject: SubjectFacts) -> None:
    if not profile.audiences.intersection(subject.audiences):
        # A support tool must not cash in a token issued for another system.
        raise AudienceNotAccepted({"profile": profile.name})


def check_scopes(profile: Profile, subject: SubjectFacts) -> None:
    # SMART on FHIR semantics: `patient/*.rs` covers `patient/Patient.rs`, v1 `.read`
    # covers v2 `.rs`; anything else must be granted verbatim.
    missing = missing_scopes(subject.scopes, sorted(profile.required_scopes))
    if missing:
        raise ScopeMissing({"profile": profile.name, "missing": " ".join(missing)})


def check_launch(profile: Profile, subject: SubjectFacts) -> None:
    if profile.require_launch_patient and not _non_empty_string(subject.claims.get("patient")):
        raise LaunchContextMissing({"profile": profile.name})


def _non_empty_string(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def apply_step_up(
    profile: Profile,
    fields: tuple[tuple[str, Disposition], ...],
    reason: str,
    subject: SubjectFacts,
    now: float,
) -> tuple[tuple[tuple[str, Disposition], ...], dict[str, str]]:
    """Apply each raw field's step-up rule; a field whose conditions are unmet falls back
    to its `otherwise`, and the note says which condition failed."""
    shaped: list[tuple[str, Disposition]] = []
    notes: dict[str, str] = {}
    for name, disposition in fields:
        rule = profile.step_up.get(name)
        unmet = (
            unmet_step_up(rule, reason, subject.claims, now)
            if rule and disposition == "raw" else None
        )
        if rule is None or unmet is None:
            shaped.append((name, disposition))
            continue
        if rule.otherwise == "refuse":
            raise StepUpRequired({"profile": profile.name, "field": name, "unmet": unmet})
        shaped.append((name, rule.otherwise))
        notes[name] = f"step_up_unmet:{unmet}"
    return tuple(shaped), notes


def unmet_step_up(rule: StepUp, reason: str, claims: Mapping[str, Any], now: float) -> str | None:
    """The first step-up condition this call does not meet (reason, acr, auth_time)."""
    if rule.reasons and reason not in rule.reasons:
        return "reason"
    if rule.acr and claims.get("acr") not in rule.acr:
        return "acr"
    if rule.max_auth_age_s is not None:
        auth_time = claims.get("auth_time")
        fresh = (isinstance(auth_time, int | float) and not isinstance(auth_time, bool)
                 and math.isfinite(auth_time) and now - auth_time <= rule.max_auth_age_s)
        if not fresh:
            return "auth_time"
    return None


def choose_reason(profile: Profile, request: DisclosureRequest) -> str:
    reason = request.reason or profile.default_reason
    if reason not in PIIANO_REASONS:
        raise ReasonInvalid({"detail": "unknown reason"})
    if reason not in profile.reasons:
        raise ReasonNotAllowed({"profile": profile.name, "reason": reason})
    return reason


def check_adhoc_reason(reason: str, text: str) -> str | None:
    if reason == "Other":
        if not text or len(text) > MAX_ADHOC_REASON or not ADHOC_REASON.match(text):
            raise ReasonInvalid({"detail": "Other needs a printable adhoc_reason of 1-256 chars"})
        return text
    if text:
        raise ReasonInvalid({"detail": "adhoc_reason is only allowed with reason Other"})
    return None


def choose_fields(
    profile: Profile, wanted: Sequence[str]
) -> tuple[tuple[str, Disposition], ...]:
    for name in wanted:
        if not PROPERTY_NAME.match(name):
            raise FieldNameInvalid()
    # The field name is safe to echo: it matched PROPERTY_NAME.
    for name in wanted:
        if name not in profile.fields:
            raise FieldNotAllowed({"profile": profile.name, "field": name})
    chosen = set(wanted) if wanted else set(profile.fields)
    return tuple((n, d) for n, d in profile.fields.items() if n in chosen)
