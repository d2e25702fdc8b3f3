"""The `[profiles.NAME]` tables: what each kind of calling service may see, and how."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from piigate.config.issuers import MAX_CLAIM_PATH
from piigate.config.model import (
    PIIANO_REASONS,
    PROPERTY_NAME,
    SUBJECT_RESOLUTIONS,
    AbuseLimits,
    ActorRule,
    Disposition,
    IssuerConfig,
    Profile,
    StepUp,
)
from piigate.config.reader import Reader, did_you_mean, non_empty, one_of, positive
from piigate.identity.peer import PeerSelector, SelectorInvalid, parse_selector
from piigate.policy.smart_scopes import check_required, parse_scope

_KEYS = {
    "callers", "audiences", "required_scopes", "reasons", "default_reason", "collection",
    "fields", "vault_api_key_env", "vault_api_key_file", "one_time_tokens", "peers",
    "bind_tokens", "require_launch_patient", "step_up", "limits", "subject_resolution",
    "actor_issuers", "actor_permission_claim", "actor_permission", "actor_acr",
    "actor_max_auth_age_s", "subject_issuers", "purpose_required", "fhir_base",
}  # fmt: skip
_ACTOR_KEYS = ("actor_issuers", "actor_permission_claim", "actor_permission", "actor_acr",
               "actor_max_auth_age_s", "subject_issuers")
_ACTOR_LIMIT_KEYS = ("actor_per_s", "actor_burst", "actor_distinct_subjects")
# A claim name with a URI scheme is namespaced: one key, dots and all.
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_STEP_UP_KEYS = {"reasons", "acr", "max_auth_age_s", "otherwise"}
_LIMIT_KEYS = {
    "caller_per_s", "caller_burst", "subject_per_s", "subject_burst", "distinct_subjects",
    "distinct_window_s", "on_store_failure", *_ACTOR_LIMIT_KEYS,
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
                      f"{', '.join(PIIANO_REASONS)}{did_you_mean(reason, PIIANO_REASONS)}")
    default_reason = r.get(t, "default_reason", p, str, reasons[0] if reasons else "")
    if reasons and default_reason not in reasons:
        r.problem(f"{p}.default_reason", "must be one of the profile's reasons")
    if default_reason == "Other":
        r.problem(f"{p}.default_reason", "cannot be Other: Other needs a per-call adhoc_reason")
    required_scopes = r.strings(t, "required_scopes", p, ())
    for scope in check_required(required_scopes):
        r.problem(f"{p}.required_scopes", f"{scope!r} is not a valid SMART scope")
    fields = _fields(r, t, p)
    resolution = r.get(t, "subject_resolution", p, str, "token_claim",
                       one_of(*SUBJECT_RESOLUTIONS))
    profile = Profile(
        name=name,
        callers=frozenset(r.strings(t, "callers", p, ())),
        audiences=frozenset(audiences),
        required_scopes=frozenset(required_scopes),
        reasons=frozenset(reasons),
        default_reason=default_reason,
        collection=r.get(t, "collection", p, str, None, non_empty),
        fields=fields,
        vault_api_key=r.secret(t, "vault_api_key", p),
        vault_api_key_file=r.secret_file(t, "vault_api_key"),
        one_time_tokens=r.get(t, "one_time_tokens", p, bool, False),
        peers=_peers(r, t, p),
        bind_tokens=r.get(t, "bind_tokens", p, bool, False),
        require_launch_patient=r.get(t, "require_launch_patient", p, bool, False),
        step_up=_step_up(r, t, p, fields, frozenset(reasons)),
        limits=_limits(r, t, p),
        subject_resolution=resolution,  # type: ignore[arg-type]  # checked above
        actor=_actor(r, t, p) if resolution == "on_behalf_of" else None,
        subject_issuers=frozenset(r.strings(t, "subject_issuers", p, ())),
        purpose_required=r.get(t, "purpose_required", p, bool, resolution == "on_behalf_of"),
        fhir_base=r.get(t, "fhir_base", p, str, None, non_empty) if "fhir_base" in t else None,
    )
    _check_resolution(r, t, p, profile)
    return profile


def _actor(r: Reader, t: Mapping[str, Any], p: str) -> ActorRule:
    issuers = r.strings(t, "actor_issuers", p, ())
    if not issuers:
        r.problem(f"{p}.actor_issuers", "on_behalf_of needs the issuers (by name) whose "
                  "tokens the acting agents hold")
    if not t.get("subject_issuers"):  # its type is checked where it is read
        r.problem(f"{p}.subject_issuers", "on_behalf_of needs the issuers (by name) whose "
                  "users may be looked up")
    if "actor_permission" not in t:
        r.problem(f"{p}.actor_permission", "on_behalf_of needs the permission (or role) an "
                  "agent's token must carry, e.g. \"support:verify\"")
    return ActorRule(
        issuers=frozenset(issuers),
        permission_claim=_claim_path(r, t, p),
        permission=r.get(t, "actor_permission", p, str, "", non_empty)
        if "actor_permission" in t else "",
        acr=frozenset(r.strings(t, "actor_acr", p, ())),
        max_auth_age_s=r.get(t, "actor_max_auth_age_s", p, int, None, positive)
        if "actor_max_auth_age_s" in t else None,
    )


def _claim_path(r: Reader, t: Mapping[str, Any], p: str) -> tuple[str, ...]:
    """A string is one claim name, taken whole (`permissions`, `groups`, a namespaced
    `https://example.com/roles`); an array is a path into nested objects (Keycloak:
    `["realm_access", "roles"]`). As for `pii_token_claim`, a dotted string that is not a
    URI reads like a path but would match no token: it is refused with both spellings."""
    full = f"{p}.actor_permission_claim"
    value = t.get("actor_permission_claim", "permissions")
    if isinstance(value, list) and 0 < len(value) <= MAX_CLAIM_PATH \
            and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    if not isinstance(value, str) or not value:
        r.problem(full, "must be a claim name, or an array of names (a path into nested "
                  f"claims, e.g. [\"realm_access\", \"roles\"]; at most {MAX_CLAIM_PATH})")
    elif "." in value and not _URI_SCHEME.match(value):
        r.problem(full, f"{value!r} looks like a path but is one claim name: for the nested "
                  f"claim write {json.dumps(value.split('.'))}; for a claim whose name holds "
                  f"a dot write [{json.dumps(value)}]")
    return (value,) if isinstance(value, str) and value else ("permissions",)


def _check_resolution(r: Reader, t: Mapping[str, Any], p: str, profile: Profile) -> None:
    """Keys that belong to another resolution are mistakes, not silently ignored."""
    resolution = profile.subject_resolution
    if resolution != "on_behalf_of":
        for key in (k for k in _ACTOR_KEYS if k in t):
            r.problem(f"{p}.{key}", "only for subject_resolution = \"on_behalf_of\"")
    if resolution != "launch_patient" and "fhir_base" in t:
        r.problem(f"{p}.fhir_base", "only for subject_resolution = \"launch_patient\"")
    limits = t.get("limits")
    if resolution == "token_claim" and isinstance(limits, dict):
        for key in (k for k in _ACTOR_LIMIT_KEYS if k in limits):
            r.problem(f"{p}.limits.{key}", "per-actor limits need an actor: subject_resolution "
                      "= \"on_behalf_of\" or \"launch_patient\"")
    if resolution == "token_claim":
        return
    if profile.bind_tokens:
        r.problem(f"{p}.bind_tokens", f"{resolution} finds the vault token by its tag "
                  "already; bind_tokens is for token_claim")
    if resolution == "on_behalf_of":
        if profile.one_time_tokens:
            r.problem(f"{p}.one_time_tokens", "an agent's token serves many lookups; "
                      "one-time tokens are for token_claim and launch_patient")
        if profile.require_launch_patient:
            r.problem(f"{p}.require_launch_patient", "is for SMART tokens, not on_behalf_of")
        return
    clinical = [s for s in map(parse_scope, profile.required_scopes)
                if s is not None and s.context in ("user", "patient")]
    if not clinical:
        r.problem(f"{p}.required_scopes", "launch_patient needs a SMART user/ or patient/ "
                  "scope, e.g. \"user/Patient.rs\" (v1 user/Patient.read grants it too)")


def check_profile_issuers(r: Reader, profiles: tuple[Profile, ...],
                          issuers: tuple[IssuerConfig, ...]) -> None:
    """Every issuer a profile names is configured (a cross-section check)."""
    names = {i.name for i in issuers}
    for profile in profiles:
        named = [("actor_issuers", profile.actor.issuers if profile.actor else frozenset()),
                 ("subject_issuers", profile.subject_issuers)]
        for key, wanted in named:
            for name in sorted(wanted - names):
                r.problem(f"profiles.{profile.name}.{key}", f"{name!r} is not a configured "
                          "issuer name")


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
        otherwise = r.get(table, "otherwise", q, str, "mask", one_of("mask", "redact", "refuse"))
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
                               "fail_closed", one_of("fail_closed", "fail_open")),
        actor_per_s=optional("actor_per_s", float),
        actor_burst=r.get(table, "actor_burst", q, int, 10, positive),
        actor_distinct_subjects=optional("actor_distinct_subjects", int),
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
        if message := one_of("raw", "mask", "redact")(disposition):
            r.problem(f"{p}.fields.{field}", message)
            continue
        fields[field] = disposition
    if not table:
        r.problem(f"{p}.fields", "must list at least one property")
    return MappingProxyType(fields)
