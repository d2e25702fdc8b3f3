"""SMART on FHIR clinical scopes: parse them and decide whether a grant covers a need, pure.

Grammar (SMART App Launch v1 and v2, "Scopes for requesting FHIR resources"):

    clinical-scope = context "/" resource "." permissions [ "?" query ]
    context        = "patient" | "user" | "system"
    resource       = FHIR resource type ("Patient", "Observation", ...) | "*"
    permissions    = v1: "read" | "write" | "*"
                   | v2: a non-empty subset of "c" "r" "u" "d" "s", in that order
    query          = v2 only: name "=" value *( "&" name "=" value )

Rules this module keeps:

1. Scopes are case-sensitive (RFC 6749 §3.3), so `Patient/Patient.rs` and
   `patient/Patient.RS` are not clinical scopes.
2. v1 permissions are read as their v2 equivalents (v2 §"Scope equivalence"): `read` =
   `rs`, `write` = `cud`, `*` = `cruds`. A v1 grant therefore satisfies a v2 requirement
   and vice versa whenever the permission sets allow.
3. Anything that is not a well-formed clinical scope (`openid`, `fhirUser`,
   `launch/patient`, `offline_access`, a malformed `patient/...`) parses to None. Such
   scopes are not lost: `satisfies` compares them as plain strings.
4. A required scope that *looks* clinical (starts with `patient/`, `user/` or `system/`)
   but is malformed is a configuration mistake, not something a grant can meet by string
   equality: `satisfies` raises `ScopeSyntaxError` so config validation (which should call
   `check_required`) reports it at start-up.
5. A search-parameter query narrows a grant (v2 §"Finer-grained resource constraints using
   search parameters"). A grant covers a requirement only if every parameter of the grant
   also restricts the requirement: parameters are ANDed, so fewer parameters is broader.
   Values are compared as written, undecoded: `%7C` and `|` differ, which can only deny.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

Context = Literal["patient", "user", "system"]

CONTEXTS: frozenset[str] = frozenset({"patient", "user", "system"})
ALL_PERMISSIONS: frozenset[str] = frozenset("cruds")

# v1 names and their v2 meaning (SMART v2 §"Scope equivalence").
V1_PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset("rs"),
    "write": frozenset("cud"),
    "*": ALL_PERMISSIONS,
}

# RFC 6749 §3.3 scope-token characters: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_CLINICAL = re.compile(
    r"(?P<context>patient|user|system)/"
    r"(?P<resource>[A-Z][A-Za-z]*|\*)\."
    r"(?P<permissions>read|write|\*|c?r?u?d?s?)"
    r"(?:\?(?P<query>.*))?"
)
# A FHIR search parameter name, with modifiers and chains (`code:in`, `subject.name`,
# `_has:Observation:patient:code`); values are any scope-token characters except '&'.
_PARAM = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_\-.:]*)=(?P<value>[^&]+)")
_CLINICAL_PREFIX = re.compile(r"(?:patient|user|system)/")


class ScopeSyntaxError(ValueError):
    """A required scope starts like a clinical scope but is not one (a config mistake)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"malformed SMART clinical scope: {scope!r}")
        self.scope = scope


@dataclass(frozen=True, slots=True)
class ClinicalScope:
    """One parsed SMART clinical scope, v1 or v2, in v2 terms."""

    text: str
    context: Context
    resource_type: str  # a FHIR resource type, or "*" for all
    permissions: frozenset[str]  # subset of {"c", "r", "u", "d", "s"}, never empty
    query: tuple[tuple[str, str], ...] = ()  # search parameters in written order

    def covers(self, required: ClinicalScope) -> bool:
        """Whether holding this scope grants everything `required` asks for."""
        # Contexts must match exactly. SMART defines them as different kinds of access,
        # not as a hierarchy: `patient/` is limited to the launch patient in context, while
        # `user/` is limited by what the signed-in user may see, and `system/` by what
        # the client itself is allowed (App Launch §"Scopes for requesting FHIR
        # resources"; Backend Services for `system/`). The spec defines no implication
        # between them, and the gateway cannot know whether this subject lies within a
        # user's or client's reach, so `user/Patient.rs` does not stand in for
        # `patient/Patient.rs`, nor the reverse.
        if self.context != required.context:
            return False
        if self.resource_type not in ("*", required.resource_type):
            return False
        if not required.permissions <= self.permissions:
            return False
        # Each grant parameter narrows the grant; it is only harmless when the
        # requirement is narrowed by the very same parameter.
        return set(self.query) <= set(required.query)


# Memoised: every call parses the profile's required scopes and each scope its token
# grants, and a deployment sees few distinct scope strings (the parse is pure and its
# result frozen). Bounded, as the granted strings come from tokens.
@functools.lru_cache(maxsize=512)
def parse_scope(text: str) -> ClinicalScope | None:
    """The clinical scope `text` denotes, or None if it is not a well-formed one.

    None covers both non-clinical scopes (`openid`, `launch/patient`) and malformed
    clinical ones; `is_clinical_shaped` tells them apart.
    """
    if not _SCOPE_TOKEN.fullmatch(text):
        return None
    match = _CLINICAL.fullmatch(text)
    if match is None:
        return None
    written = match["permissions"]
    if not written:  # the v2 alternative matches the empty string
        return None
    v1 = V1_PERMISSIONS.get(written)
    raw_query = match["query"]
    query: tuple[tuple[str, str], ...] = ()
    if raw_query is not None:
        if v1 is not None:
            # Search-parameter constraints exist only in v2 syntax; a v1 scope with a
            # query has no defined meaning, so it grants nothing.
            return None
        parsed = _parse_query(raw_query)
        if parsed is None:
            return None
        query = parsed
    return ClinicalScope(
        text=text,
        context=cast(Context, match["context"]),
        resource_type=match["resource"],
        permissions=v1 if v1 is not None else frozenset(written),
        query=query,
    )


def is_clinical_shaped(text: str) -> bool:
    """Whether `text` claims to be a clinical scope (starts with a context and a slash)."""
    return _CLINICAL_PREFIX.match(text) is not None


def check_required(required: Iterable[str]) -> tuple[str, ...]:
    """The malformed clinical scopes among `required`, for config validation at start-up."""
    return tuple(s for s in required if is_clinical_shaped(s) and parse_scope(s) is None)


def satisfies(granted: Iterable[str], required: str) -> bool:
    """Whether the `granted` scopes (one scope per item) cover the `required` one.

    A clinical requirement is met by any granted clinical scope that covers it; any other
    requirement (`openid`, `launch/patient`) only by the identical granted string.
    Raises `ScopeSyntaxError` if `required` is a malformed clinical scope.
    """
    granted = _scope_list(granted)
    wanted = parse_scope(required)
    if wanted is None:
        if is_clinical_shaped(required):
            raise ScopeSyntaxError(required)
        return required in granted
    for text in granted:
        grant = parse_scope(text)
        if grant is not None and grant.covers(wanted):
            return True
    return False


def missing_scopes(granted: Iterable[str], required: Iterable[str]) -> tuple[str, ...]:
    """The required scopes not covered by `granted`, once each, in the order required.

    Meant for error metadata (`ScopeMissing`): scope names are safe to echo, they come
    from the profile, not from the caller.
    """
    granted = _scope_list(granted)
    missing: list[str] = []
    for scope in required:
        if scope not in missing and not satisfies(granted, scope):
            missing.append(scope)
    return tuple(missing)


def _parse_query(raw: str) -> tuple[tuple[str, str], ...] | None:
    if not raw:
        return None  # `patient/Observation.rs?` says nothing: refuse rather than guess
    params: list[tuple[str, str]] = []
    for part in raw.split("&"):
        match = _PARAM.fullmatch(part)
        if match is None:
            return None
        params.append((match["name"], match["value"]))
    return tuple(params)


def _scope_list(granted: Iterable[str]) -> tuple[str, ...]:
    # A bare string is an Iterable[str] of characters: passing the raw `scope` claim by
    # mistake would silently grant nothing (or, for one-letter scopes, something).
    if isinstance(granted, str):
        raise TypeError("granted must be a collection of scopes, not one space-separated str")
    return tuple(granted)
