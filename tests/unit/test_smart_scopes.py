"""SMART on FHIR scopes: parsing v1 and v2, and whether a grant covers a requirement."""

from __future__ import annotations

import pytest

from piigate.policy.smart_scopes import (
    ClinicalScope,
    ScopeSyntaxError,
    check_required,
    is_clinical_shaped,
    missing_scopes,
    parse_scope,
    satisfies,
)


@pytest.mark.parametrize(
    ("text", "context", "resource", "permissions", "query"),
    [
        ("patient/Patient.read", "patient", "Patient", "rs", ()),
        ("patient/Patient.write", "patient", "Patient", "cud", ()),
        ("patient/*.*", "patient", "*", "cruds", ()),
        ("user/Observation.write", "user", "Observation", "cud", ()),
        ("patient/Patient.rs", "patient", "Patient", "rs", ()),
        ("user/*.rs", "user", "*", "rs", ()),
        ("system/Patient.rs", "system", "Patient", "rs", ()),
        ("user/*.cruds", "user", "*", "cruds", ()),
        ("patient/Observation.c", "patient", "Observation", "c", ()),
        ("patient/Observation.s", "patient", "Observation", "s", ()),
        ("patient/Observation.cd", "patient", "Observation", "cd", ()),
        ("patient/Observation.rs?category=laboratory", "patient", "Observation", "rs",
         (("category", "laboratory"),)),
        ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
         "observation-category|laboratory", "patient", "Observation", "rs",
         (("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),)),
        ("user/Observation.rs?category=vital-signs&code:in=http://x/vs", "user", "Observation",
         "rs", (("category", "vital-signs"), ("code:in", "http://x/vs"))),
        ("patient/*.rs?_security=N", "patient", "*", "rs", (("_security", "N"),)),
    ],
)
def test_clinical_scopes_parse_into_v2_terms(
    text: str, context: str, resource: str, permissions: str, query: tuple[tuple[str, str], ...]
) -> None:
    scope = parse_scope(text)
    assert isinstance(scope, ClinicalScope)
    assert (scope.text, scope.context, scope.resource_type, scope.permissions, scope.query) == (
        text, context, resource, frozenset(permissions), query,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "openid",
        "fhirUser",
        "launch",
        "launch/patient",
        "offline_access",
        "online_access",
        "Patient.rs",  # no context
        "patient/.rs",  # no resource type
        "patient/Patient",  # no permissions
        "patient/Patient.",  # empty permissions
        "patient/Patient.readx",
        "patient/Patient.reads",
        "patient/Patient.sr",  # v2 letters out of order
        "patient/Patient.rr",  # repeated letter
        "patient/Patient.rsc",
        "patient/Patient.x",
        "patient/Patient.**",
        "patient/Patient.rs?",  # empty query
        "patient/Patient.rs?category",  # parameter without value
        "patient/Patient.rs?category=",
        "patient/Patient.rs?=lab",
        "patient/Patient.rs?a=1&",  # empty parameter
        "patient/Patient.rs?a=1&&b=2",
        "patient/Patient.read?category=lab",  # queries are v2 only
        "patient/Patient.rs?category=a b",  # a space splits scopes
        "Patient/Patient.rs",  # case-sensitive (RFC 6749 §3.3)
        "PATIENT/Patient.rs",
        "patient/patient.rs",  # resource types are PascalCase
        "patient/Patient.RS",
        "patient/Patient.Read",
        "patient/Patient.READ",
        "encounter/Patient.rs",  # not a context
        "patient/Patient.rs ",
        " patient/Patient.rs",
        "patient/Patient.rs\n",
        "patient/Patient/Observation.rs",
        "patient/Pat-ient.rs",
        "patient/*",
        "patient/\u00c9tat.rs",  # non-ASCII is not a scope-token
    ],
)
def test_non_clinical_and_malformed_scopes_parse_to_none(text: str) -> None:
    assert parse_scope(text) is None


@pytest.mark.parametrize(
    ("text", "shaped"),
    [("patient/Patient.sr", True), ("user/x", True), ("system/", True), ("openid", False),
     ("launch/patient", False), ("Patient/Patient.rs", False), ("", False)],
)
def test_clinical_shape_is_the_context_prefix(text: str, shaped: bool) -> None:
    assert is_clinical_shaped(text) is shaped


@pytest.mark.parametrize(
    ("granted", "required", "expected"),
    [
        # the same scope
        (["patient/Patient.rs"], "patient/Patient.rs", True),
        # permissions: the grant needs every permission of the requirement
        (["patient/Patient.cruds"], "patient/Patient.r", True),
        (["patient/Patient.r"], "patient/Patient.rs", False),
        (["patient/Patient.rs"], "patient/Patient.cr", False),
        (["patient/Patient.r", "patient/Patient.s"], "patient/Patient.rs", False),  # no union
        # v1 <-> v2
        (["patient/Patient.read"], "patient/Patient.rs", True),
        (["patient/Patient.rs"], "patient/Patient.read", True),
        (["patient/Patient.r"], "patient/Patient.read", False),  # read = r + s
        (["patient/Patient.write"], "patient/Patient.cud", True),
        (["patient/Patient.write"], "patient/Patient.s", False),
        (["patient/Patient.cruds"], "patient/Patient.write", True),
        (["patient/Patient.*"], "patient/Patient.cruds", True),
        (["patient/Patient.cruds"], "patient/Patient.*", True),
        (["patient/Patient.rs"], "patient/Patient.*", False),
        # wildcard resource type
        (["patient/*.rs"], "patient/Observation.rs", True),
        (["patient/*.read"], "patient/Patient.r", True),
        (["user/*.*"], "user/Observation.write", True),
        (["patient/Patient.rs"], "patient/*.rs", False),  # one type is not all types
        (["patient/Observation.rs"], "patient/Patient.rs", False),
        # contexts never stand in for each other
        (["user/Patient.rs"], "patient/Patient.rs", False),
        (["patient/Patient.rs"], "user/Patient.rs", False),
        (["system/Patient.rs"], "patient/Patient.rs", False),
        (["user/*.*"], "system/Patient.r", False),
        # search-parameter restrictions
        (["patient/Observation.rs?category=laboratory"], "patient/Observation.rs", False),
        (["patient/Observation.rs"], "patient/Observation.rs?category=laboratory", True),
        (["patient/Observation.rs?category=laboratory"],
         "patient/Observation.rs?category=laboratory", True),
        (["patient/Observation.rs?category=laboratory"],
         "patient/Observation.r?category=laboratory&code=x", True),
        (["patient/Observation.rs?category=laboratory&code=x"],
         "patient/Observation.rs?code=x&category=laboratory", True),  # order is irrelevant
        (["patient/Observation.rs?category=laboratory&code=x"],
         "patient/Observation.rs?category=laboratory", False),
        (["patient/Observation.rs?category=vital-signs"],
         "patient/Observation.rs?category=laboratory", False),
        (["patient/Observation.rs?category=a%7Cb"], "patient/Observation.rs?category=a|b",
         False),  # compared as written: can only deny
        # several grants: any one may do
        (["openid", "fhirUser", "launch/patient", "patient/Patient.rs"],
         "patient/Patient.r", True),
        (["patient/Observation.rs?category=laboratory", "patient/Observation.read"],
         "patient/Observation.rs", True),
        # malformed grants grant nothing
        (["patient/Patient.sr"], "patient/Patient.rs", False),
        (["patient/Patient.readx"], "patient/Patient.rs", False),
        (["Patient/Patient.rs"], "patient/Patient.rs", False),
        (["patient/Patient.rs?"], "patient/Patient.rs", False),
        ([], "patient/Patient.rs", False),
        # non-clinical requirements are plain string equality
        (["openid", "fhirUser"], "fhirUser", True),
        (["launch/patient"], "launch/patient", True),
        (["launch"], "launch/patient", False),
        (["FHIRUSER"], "fhirUser", False),
        (["user/*.*"], "openid", False),
        ([], "openid", False),
    ],
)
def test_satisfies(granted: list[str], required: str, expected: bool) -> None:
    assert satisfies(granted, required) is expected


@pytest.mark.parametrize(
    "required",
    ["patient/Patient.sr", "patient/.rs", "user/Patient.readx", "system/Patient.rs?", "patient/"],
)
def test_a_malformed_clinical_requirement_is_a_config_error_not_a_string_match(
    required: str,
) -> None:
    with pytest.raises(ScopeSyntaxError) as caught:
        satisfies([required], required)
    assert caught.value.scope == required


def test_check_required_names_only_the_malformed_clinical_scopes() -> None:
    required = ["openid", "patient/Patient.rs", "patient/Patient.sr", "launch/patient",
                "user/.read"]
    assert check_required(required) == ("patient/Patient.sr", "user/.read")


def test_missing_scopes_in_required_order_once_each() -> None:
    granted = frozenset({"openid", "patient/Patient.read", "user/Observation.rs"})
    required = ["patient/Patient.rs", "patient/Observation.rs", "fhirUser", "openid",
                "patient/Observation.rs", "patient/Patient.c"]
    assert missing_scopes(granted, required) == (
        "patient/Observation.rs", "fhirUser", "patient/Patient.c",
    )
    assert missing_scopes(granted, []) == ()
    assert missing_scopes(granted, ["patient/*.r"]) == ("patient/*.r",)


def test_missing_scopes_accepts_a_one_shot_iterator_of_grants() -> None:
    granted = iter(["patient/Patient.rs", "patient/Observation.rs"])
    assert missing_scopes(granted, ["patient/Patient.r", "patient/Observation.r"]) == ()


def test_a_space_separated_string_is_refused_not_read_as_characters() -> None:
    with pytest.raises(TypeError):
        satisfies("patient/Patient.rs openid", "openid")
    with pytest.raises(TypeError):
        missing_scopes("r s", ["patient/Patient.rs"])


def test_covers_is_the_relation_satisfies_uses() -> None:
    grant = parse_scope("patient/*.read")
    need = parse_scope("patient/Patient.rs")
    assert grant is not None
    assert need is not None
    assert grant.covers(need)
    assert not need.covers(grant)
