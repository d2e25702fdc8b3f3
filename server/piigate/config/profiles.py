"""The `[profiles.NAME]` tables: what each kind of calling service may see, and how."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from piigate.config.model import PIIANO_REASONS, PROPERTY_NAME, Disposition, Profile
from piigate.config.reader import Reader, non_empty
from piigate.peer import PeerSelector, SelectorInvalid, parse_selector

_KEYS = {
    "callers", "audiences", "required_scopes", "reasons", "default_reason", "collection",
    "fields", "vault_api_key_env", "vault_api_key_file", "one_time_tokens", "peers",
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
    return Profile(
        name=name,
        callers=frozenset(r.strings(t, "callers", p, ())),
        audiences=frozenset(audiences),
        required_scopes=frozenset(r.strings(t, "required_scopes", p, ())),
        reasons=frozenset(reasons),
        default_reason=default_reason,
        collection=r.get(t, "collection", p, str, None, non_empty),
        fields=_fields(r, t, p),
        vault_api_key=r.secret(t, "vault_api_key", p),
        one_time_tokens=r.get(t, "one_time_tokens", p, bool, False),
        peers=_peers(r, t, p),
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
