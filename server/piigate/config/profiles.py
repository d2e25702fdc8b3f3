"""The `[profiles.NAME]` tables: what each kind of calling service may see, and how."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from piigate.config.model import (
    PIIANO_REASONS,
    PROPERTY_NAME,
    AbuseLimits,
    Disposition,
    Profile,
    StepUp,
)
from piigate.config.reader import Reader, non_empty, positive
from piigate.identity.peer import PeerSelector, SelectorInvalid, parse_selector
from piigate.policy.smart_scopes import check_required

_KEYS = {
    "callers", "audiences", "required_scopes", "reasons", "default_reason", "collection",
    "fields", "vault_api_key_env", "vault_api_key_file", "one_time_tokens", "peers",
    "bind_tokens", "require_launch_patient", "step_up", "limits",
}  # fmt: skip
_STEP_UP_KEYS = {"reasons", "acr", "max_auth_age_s", "otherwise"}
_LIMIT_KEYS = {
    "caller_per_s", "caller_burst", "subject_per_s", "subject_burst", "distinct_subjects",
    "distinct_window_s", "on_store_failure",
}  # fmt: skip


def read_profiles(r: Reader, data: Mapping[str, Any]) -> tuple[Profile, ...]:
    raw = r.table(data, "profiles", "profiles")
    profiles: list[Profile] = []
    claimed: dict[str, str] = {}
    for name, table in raw.items():
        path = f"profiles.{name}"
        if not isinstance(table, dict):
            r.problem(path, "must be a table")
            continue
        profile = _read_profile(r, name, table, path)
        if not profile.callers and not profile.peers:
            r.problem(path, "needs callers (client ids), peers (mTLS identities) or both")
        for caller in [*profile.callers, *(f"{s.kind}:{s.value}" for s in profile.peers)]:
            if caller in claimed:
                r.problem(path, f"caller {caller!r} already uses profile "
                          f"{claimed[caller]!r}; a caller has exactly one profile")
            claimed[caller] = name
        profiles.append(profile)
    if not profiles:
        r.problem("profiles", "no profiles: every caller would be denied (define at least one)")
    return tuple(profiles)


def _read_profile(r: Reader, name: str, t: Mapping[str, Any], p: str) -> Profile:
    r.unknown_keys(t, _KEYS, p)
    audiences = r.strings(t, "audiences", p)
    if not audiences and "audiences" in t:
        r.problem(f"{p}.audiences", "must list at least one audience")
    reasons = r.strings(t, "reasons", p, ("AppFunctionality",))
    for reason in reasons:
        if reason not in PIIANO_REASONS:
            r.problem(f"{p}.reasons", f"{reason!r} is not a vault reason; use one of "
                      f"{', '.join(PIIANO_REASONS)}")
    default_reason = r.get(t, "default_reason", p, str, reasons[0] if reasons else "")
    if reasons and default_reason not in reasons:
        r.problem(f"{p}.default_reason", "must be one of the profile's reasons")
    if default_reason == "Other":
        r.problem(f"{p}.default_reason", "cannot be Other: Other needs a per-call adhoc_reason")
    required_scopes = r.strings(t, "required_scopes", p, ())
    for scope in check_required(required_scopes):
        r.problem(f"{p}.required_scopes", f"{scope!r} is not a valid SMART scope")
    fields = _fields(r, t, p)
    return Profile(
        name=name,
        callers=frozenset(r.strings(t, "callers", p, ())),
        audiences=frozenset(audiences),
        required_scopes=frozenset(required_scopes),
        reasons=frozenset(reasons),
        default_reason=default_reason,
        collection=r.get(t, "collection", p, str, None, non_empty),
        fields=fields,
        vault_api_key=r.secret(t, "vault_api_key", p),
        one_time_tokens=r.get(t, "one_time_tokens", p, bool, False),
        peers=_peers(r, t, p),
        bind_tokens=r.get(t, "bind_tokens", p, bool, False),
        require_launch_patient=r.get(t, "require_launch_patient", p, bool, False),
        step_up=_step_up(r, t, p, fields, frozenset(reasons)),
        limits=_limits(r, t, p),
    )


def _step_up(r: Reader, t: Mapping[str, Any], p: str, fields: Mapping[str, Disposition],
             reasons: frozenset[str]) -> Mapping[str, StepUp]:
    rules: dict[str, StepUp] = {}
    for name, table in r.table(t, "step_up", p).items():
        q = f"{p}.step_up.{name}"
        if not isinstance(table, dict):
            r.problem(q, "must be a table")
            continue
        r.unknown_keys(table, _STEP_UP_KEYS, q)
        if fields.get(name) != "raw":
            r.problem(q, "step-up conditions apply to fields the profile discloses raw")
        step_reasons = frozenset(r.strings(table, "reasons", q, ()))
        for reason in sorted(step_reasons - reasons):
            r.problem(f"{q}.reasons", f"{reason!r} is not one of the profile's reasons")
        otherwise = r.get(table, "otherwise", q, str, "mask")
        if otherwise not in ("mask", "redact", "refuse"):
            r.problem(f"{q}.otherwise", "must be one of mask, redact, refuse")
        rules[name] = StepUp(
            reasons=step_reasons,
            acr=frozenset(r.strings(table, "acr", q, ())),
            max_auth_age_s=r.get(table, "max_auth_age_s", q, int, None, positive)
            if "max_auth_age_s" in table else None,
            otherwise=otherwise,  # type: ignore[arg-type]
        )
    return MappingProxyType(rules)


def _limits(r: Reader, t: Mapping[str, Any], p: str) -> AbuseLimits | None:
    if "limits" not in t:
        return None
    table = r.table(t, "limits", p)
    q = f"{p}.limits"
    r.unknown_keys(table, _LIMIT_KEYS, q)

    def optional(key: str, kind: type[float] | type[int]) -> Any:
        return r.get(table, key, q, kind, None, positive) if key in table else None

    return AbuseLimits(
        caller_per_s=optional("caller_per_s", float),
        caller_burst=r.get(table, "caller_burst", q, int, 20, positive),
        subject_per_s=optional("subject_per_s", float),
        subject_burst=r.get(table, "subject_burst", q, int, 5, positive),
        distinct_subjects=optional("distinct_subjects", int),
        distinct_window_s=r.get(table, "distinct_window_s", q, float, 3600.0, positive),
        on_store_failure=r.get(table, "on_store_failure", q, str,  # type: ignore[arg-type]
                               "fail_closed",
                               lambda v: None if v in ("fail_closed", "fail_open") else
                               "must be fail_closed or fail_open"),
    )


def _peers(r: Reader, t: Mapping[str, Any], p: str) -> tuple[PeerSelector, ...]:
    selectors: list[PeerSelector] = []
    for i, text in enumerate(r.strings(t, "peers", p, ())):
        try:
            selectors.append(parse_selector(text))
        except SelectorInvalid as exc:
            r.problem(f"{p}.peers[{i}]", str(exc))
    return tuple(selectors)


def _fields(r: Reader, t: Mapping[str, Any], p: str) -> Mapping[str, Disposition]:
    table = r.table(t, "fields", p)
    fields: dict[str, Disposition] = {}
    for field, disposition in table.items():
        if not PROPERTY_NAME.match(field):
            r.problem(f"{p}.fields.{field}", "is not a valid vault property name")
        if disposition not in ("raw", "mask", "redact"):
            r.problem(f"{p}.fields.{field}", "must be one of raw, mask, redact")
            continue
        fields[field] = disposition
    if not table:
        r.problem(f"{p}.fields", "must list at least one property")
    return MappingProxyType(fields)
