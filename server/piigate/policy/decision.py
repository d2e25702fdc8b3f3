"""Stage 4: the profile decision, pure.

`decide` checks the subject token and the request against the caller's profile (chosen
in stage 2, `piigate.policy.profiles`) and returns a `Plan`: which vault properties to
read, in which form, under which reason. Checks run permission-first (audience, scope,
reason, fields), so a denied caller learns nothing about what exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from piigate.config import PIIANO_REASONS, PROPERTY_NAME, Disposition, Profile, StepUp
from piigate.errors import (
    AudienceNotAccepted,
    FieldNameInvalid,
    FieldNotAllowed,
    GatewayError,
    LaunchContextMissing,
    PurposeInvalid,
    PurposeMissing,
    ReasonInvalid,
    ReasonNotAllowed,
    ScopeMissing,
    StepUpRequired,
)
from piigate.policy.smart_scopes import missing_scopes

T = TypeVar("T")
MAX_ADHOC_REASON = 256
_MAX_TIME = 1e15  # seconds since the epoch: some 31 million years; beyond it, no time
# Free-text purpose goes to the vault and the audit trail: printable text only, so it
# cannot forge audit lines or smuggle control characters.
ADHOC_REASON = re.compile(r"^[^\x00-\x1f\x7f]+$")
# The operator's purpose (a ticket reference) goes to the audit trail and to the vault's
# `custom_audit` (in its URL, so never PII): short, and printable in Unicode's sense, so
# no newline, line separator, bidi override or zero-width character can forge a line.
MAX_PURPOSE = 128


@dataclass(frozen=True, slots=True)
class DisclosureRequest:
    """What the caller asked for, already translated from the wire."""

    fields: tuple[str, ...]
    reason: str | None  # a Piiano reason name; None = the profile's default
    adhoc_reason: str
    purpose: str = ""  # why, as the operator's process names it (a ticket reference)
    patient: str = ""  # SMART: the FHIR Patient id the app has in context, if it says


@dataclass(frozen=True, slots=True)
class Plan:
    """What to read from the vault and how to disclose it."""

    profile: Profile
    reason: str
    adhoc_reason: str | None
    fields: tuple[tuple[str, Disposition], ...]  # profile order
    # Why a field was disclosed in a lesser form than the profile's (step-up unmet).
    notes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    purpose: str | None = None  # to the audit trail and the vault's custom_audit

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


@dataclass(frozen=True, slots=True)
class Check:
    """One check of the decision sequence as `piigate explain` reports it."""

    label: str
    refusal: GatewayError | None = None  # None: passed
    detail: str = ""


class Checks:
    """Runs the checks of a decision sequence. Without a report list (the gateway) a
    refusal is raised at once; with one (`piigate explain`), every check that can run does,
    each is recorded, and the first refusal is raised when `done` is called. Either way
    the checks and their order are the same code."""

    __slots__ = ("_first", "notes", "planned", "report")

    def __init__(self, report: list[Check] | None = None) -> None:
        self.report = report
        self._first: GatewayError | None = None
        # With a report: the fields the sequence arrived at, even when it refuses.
        self.planned: tuple[tuple[str, Disposition], ...] = ()
        self.notes: Mapping[str, str] = MappingProxyType({})

    def run(self, label: str, check: Callable[..., T], *args: Any) -> T | None:
        """`check(*args)`; with a report, a refusal is recorded and None returned."""
        if self.report is None:
            return check(*args)
        try:
            result = check(*args)
        except GatewayError as exc:
            self.report.append(Check(label, exc))
            self._first = self._first or exc
            return None
        self.report.append(Check(label))
        return result

    def note(self, label: str, detail: str = "") -> None:
        """Record a fact that is not a check (nothing to refuse)."""
        if self.report is not None:
            self.report.append(Check(label, None, detail))

    def done(self) -> None:
        """Raise the first refusal recorded, if any."""
        if self._first is not None:
            raise self._first


def decide(
    profile: Profile,
    subject: SubjectFacts,
    request: DisclosureRequest,
    now: float,
) -> Plan:
    """Check a request against `profile`; return the plan or raise the first refusal."""
    checks = Checks()
    plan = plan_checks(checks, profile, subject, request, now)
    assert plan is not None  # without a report, a refusal was raised
    return plan


def plan_checks(
    c: Checks,
    profile: Profile,
    subject: SubjectFacts,
    request: DisclosureRequest,
    now: float,
) -> Plan | None:
    """The decision's checks, run through `c`, in this order: permission first
    (audience, scope, launch context, reason, purpose, fields), so a denied caller learns
    nothing about what exists. None only with a report, when a check refused (the caller raises
    with `c.done()`)."""
    c.run("audience accepted", check_audience, profile, subject)
    c.run("required scopes granted", check_scopes, profile, subject)
    c.run("launch context", check_launch, profile, subject)
    reason = c.run("reason allowed", choose_reason, profile, request)
    adhoc = (c.run("adhoc reason", check_adhoc_reason, reason, request.adhoc_reason)
             if reason is not None else None)
    purpose = c.run("purpose", check_purpose, profile, request.purpose)
    chosen = c.run("fields within the profile", choose_fields, profile, request.fields)
    if chosen is None:  # only with a report: go on with the requested fields it names
        chosen = tuple((n, d) for n, d in profile.fields.items()
                       if not request.fields or n in request.fields)
    c.planned = chosen
    stepped = c.run("step-up for raw fields", apply_step_up, profile, chosen, reason or "",
                    subject, now)
    if stepped is None or reason is None:
        return None
    fields, notes = stepped
    c.planned, c.notes = fields, MappingProxyType(notes)
    return Plan(profile, reason, adhoc, fields, c.notes, purpose)


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
    needed = profile.require_launch_patient or profile.subject_resolution == "launch_patient"
    if needed and not _non_empty_string(subject.claims.get("patient")):
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
        # A JSON number may be any size: only one a float can hold is a time at all.
        fresh = (isinstance(auth_time, int | float) and not isinstance(auth_time, bool)
                 and abs(auth_time) < _MAX_TIME and now - auth_time <= rule.max_auth_age_s)
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


def check_purpose(profile: Profile, text: str) -> str | None:
    """The call's purpose, or None when it gives none and the profile does not need one."""
    if not text:
        if profile.purpose_required:
            raise PurposeMissing({"profile": profile.name})
        return None
    if valid_purpose(text) is None:
        raise PurposeInvalid({"detail": f"at most {MAX_PURPOSE} printable characters"})
    return text


def valid_purpose(text: str) -> str | None:
    """`text` if it is a purpose piigate may record (1 to MAX_PURPOSE printable
    characters), else None."""
    return text if text and len(text) <= MAX_PURPOSE and text.isprintable() else None


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
