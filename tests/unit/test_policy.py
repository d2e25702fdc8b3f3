"""The profile decision: deny by default, permission before existence, profile order."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import pytest

from piigate.config import Disposition, Profile, StepUp
from piigate.errors import (
    AudienceNotAccepted,
    CallerWithoutProfile,
    FieldNameInvalid,
    FieldNotAllowed,
    LaunchContextMissing,
    ReasonInvalid,
    ReasonNotAllowed,
    ScopeMissing,
    StepUpRequired,
)
from piigate.identity.caller import Caller
from piigate.policy.decision import DisclosureRequest, SubjectFacts, decide, unmet_step_up
from piigate.policy.profiles import ProfileIndex
from piigate.tokens.claims import claim_values, granted_scopes

SUPPORT = Profile(
    name="support", callers=frozenset({"support-tool"}), audiences=frozenset({"support-ui"}),
    required_scopes=frozenset({"read:support"}),
    reasons=frozenset({"AccountManagement", "Other"}), default_reason="AccountManagement",
    collection="users",
    fields=MappingProxyType({"user_id": "redact", "ssn": "mask", "email": "mask"}),
    vault_api_key="k", one_time_tokens=False,
)


NOW = 1_900_000_000.0


def facts(
    aud: Any = "support-ui", scopes: frozenset[str] | None = None, **claims: Any
) -> SubjectFacts:
    """What a subject token with this `aud` claim, scopes and claims presents."""
    return SubjectFacts(claim_values({"aud": aud}, ("aud",)),
                        SCOPES if scopes is None else scopes, claims)


def ask(
    fields: tuple[str, ...] = (), reason: str | None = None, adhoc: str = ""
) -> DisclosureRequest:
    return DisclosureRequest(fields, reason, adhoc)


SCOPES = frozenset({"read:support", "openid"})


def test_no_profile_no_data() -> None:
    index = ProfileIndex([SUPPORT])
    assert index.select(Caller("support-tool", "dev")) is SUPPORT
    with pytest.raises(CallerWithoutProfile):
        index.select(Caller("stranger", "dev"))


def test_everything_the_profile_allows_in_profile_order_by_default() -> None:
    plan = decide(SUPPORT, facts(), ask(), NOW)
    fields: tuple[tuple[str, Disposition], ...] = (
        ("user_id", "redact"), ("ssn", "mask"), ("email", "mask"),
    )
    assert plan.fields == fields
    assert plan.reason == "AccountManagement"
    assert plan.vault_props == ("ssn.mask", "email.mask")


def test_a_subset_can_be_asked_for() -> None:
    plan = decide(SUPPORT, facts(), ask(("email", "ssn")), NOW)
    assert [name for name, _ in plan.fields] == ["ssn", "email"]


@pytest.mark.parametrize("aud", ["fhir", ["fhir", "https://idp/userinfo"], [], None])
def test_a_token_for_another_audience_is_refused(aud: Any) -> None:
    with pytest.raises(AudienceNotAccepted):
        decide(SUPPORT, facts(aud, SCOPES), ask(), NOW)


def test_array_audience_containing_the_profiles_audience_is_accepted() -> None:
    plan = decide(SUPPORT, facts(("support-ui", "https://idp/userinfo"), SCOPES), ask(), NOW)
    assert plan.profile is SUPPORT


def test_missing_scope_is_named_in_metadata() -> None:
    with pytest.raises(ScopeMissing) as caught:
        decide(SUPPORT, facts(scopes=frozenset({"openid"})), ask(), NOW)
    assert caught.value.metadata["missing"] == "read:support"


def test_fields_beyond_the_profile_are_refused() -> None:
    with pytest.raises(FieldNotAllowed) as caught:
        decide(SUPPORT, facts(), ask(("ssn", "diagnosis")), NOW)
    assert caught.value.metadata["field"] == "diagnosis"


@pytest.mark.parametrize("name", ["ssn.mask", "", "a b", "x" * 65, "ssn,email"])
def test_malformed_field_names_are_invalid_arguments(name: str) -> None:
    with pytest.raises(FieldNameInvalid):
        decide(SUPPORT, facts(), ask((name,)), NOW)


def test_reasons_outside_the_profile_are_refused() -> None:
    with pytest.raises(ReasonNotAllowed):
        decide(SUPPORT, facts(), ask(reason="Marketing"), NOW)
    with pytest.raises(ReasonInvalid):
        decide(SUPPORT, facts(), ask(reason="unknown reason 99"), NOW)


def test_other_needs_printable_adhoc_text_and_nothing_else_takes_it() -> None:
    plan = decide(SUPPORT, facts(), ask(reason="Other", adhoc="ticket 4711"), NOW)
    assert (plan.reason, plan.adhoc_reason) == ("Other", "ticket 4711")
    for bad in ("", "x" * 257, "line\nbreak"):
        with pytest.raises(ReasonInvalid):
            decide(SUPPORT, facts(), ask(reason="Other", adhoc=bad), NOW)
    with pytest.raises(ReasonInvalid):
        decide(SUPPORT, facts(), ask(adhoc="why not"), NOW)


def test_permission_is_checked_before_the_request_shape() -> None:
    # A caller whose token is for another audience learns nothing about field names.
    with pytest.raises(AudienceNotAccepted):
        decide(SUPPORT, facts("fhir", SCOPES), ask(("no-such-field!",)), NOW)


def test_scopes_from_a_string_or_an_array() -> None:
    assert granted_scopes({"scope": "a b  c"}, ("scope", "scp")) == {"a", "b", "c"}
    assert granted_scopes({"scp": ("a", "b", 3)}, ("scope", "scp")) == {"a", "b"}
    assert granted_scopes({}, ("scope", "scp")) == frozenset()


FHIR = Profile(
    name="fhir", callers=frozenset({"fhir-app"}), audiences=frozenset({"fhir"}),
    required_scopes=frozenset({"patient/Patient.rs"}), reasons=frozenset({"AppFunctionality"}),
    default_reason="AppFunctionality", collection="users",
    fields=MappingProxyType({"user_id": "raw"}), vault_api_key="k",
    require_launch_patient=True,
)


@pytest.mark.parametrize("granted", ["patient/Patient.read", "patient/*.rs", "patient/*.cruds"])
def test_smart_scopes_with_wildcards_and_v1_v2_equivalence(granted: str) -> None:
    plan = decide(FHIR, facts("fhir", frozenset({granted}), patient="p-1"), ask(), NOW)
    assert plan.fields == (("user_id", "raw"),)


@pytest.mark.parametrize("granted", ["user/Patient.rs", "patient/Observation.rs",
                                     "patient/Patient.r", "patient/Patient.rs?x=y"])
def test_smart_scopes_that_do_not_cover_the_requirement(granted: str) -> None:
    with pytest.raises(ScopeMissing):
        decide(FHIR, facts("fhir", frozenset({granted}), patient="p-1"), ask(), NOW)


def test_launch_patient_context_is_required() -> None:
    with pytest.raises(LaunchContextMissing):
        decide(FHIR, facts("fhir", frozenset({"patient/Patient.rs"})), ask(), NOW)


def with_step_up(otherwise: str, **rule: Any) -> Profile:
    step = StepUp(reasons=frozenset(rule.get("reasons", ())), acr=frozenset(rule.get("acr", ())),
                  max_auth_age_s=rule.get("max_auth_age_s"), otherwise=otherwise)  # type: ignore[arg-type]
    return dataclasses.replace(
        SUPPORT, fields=MappingProxyType({"ssn": "raw", "email": "mask"}),
        reasons=frozenset({"AccountManagement", "FraudPreventionSecurityAndCompliance"}),
        step_up=MappingProxyType({"ssn": step}),
    )


def test_step_up_met_discloses_raw() -> None:
    profile = with_step_up("mask", reasons=["FraudPreventionSecurityAndCompliance"],
                           acr=["phr"], max_auth_age_s=300)
    plan = decide(profile, facts(acr="phr", auth_time=NOW - 60),
                  ask(reason="FraudPreventionSecurityAndCompliance"), NOW)
    assert plan.fields == (("ssn", "raw"), ("email", "mask"))
    assert dict(plan.notes) == {}


@pytest.mark.parametrize(
    ("claims", "reason", "unmet"),
    [
        ({"acr": "phr", "auth_time": NOW - 60}, "AccountManagement", "reason"),
        ({"acr": "pwd", "auth_time": NOW - 60}, "FraudPreventionSecurityAndCompliance", "acr"),
        ({"acr": "phr", "auth_time": NOW - 301}, "FraudPreventionSecurityAndCompliance",
         "auth_time"),
        ({"acr": "phr"}, "FraudPreventionSecurityAndCompliance", "auth_time"),
        ({"acr": "phr", "auth_time": "recent"}, "FraudPreventionSecurityAndCompliance",
         "auth_time"),
    ],
)
def test_step_up_unmet_falls_back_or_refuses(
    claims: dict[str, Any], reason: str, unmet: str
) -> None:
    rule = {"reasons": ["FraudPreventionSecurityAndCompliance"], "acr": ["phr"],
            "max_auth_age_s": 300}
    plan = decide(with_step_up("mask", **rule), facts(**claims), ask(reason=reason), NOW)
    assert plan.fields[0] == ("ssn", "mask")
    assert plan.notes["ssn"] == f"step_up_unmet:{unmet}"
    assert plan.vault_props == ("ssn.mask", "email.mask")
    redacted = decide(with_step_up("redact", **rule), facts(**claims), ask(reason=reason), NOW)
    assert redacted.fields[0] == ("ssn", "redact")
    with pytest.raises(StepUpRequired) as caught:
        decide(with_step_up("refuse", **rule), facts(**claims), ask(reason=reason), NOW)
    assert caught.value.metadata["unmet"] == unmet


@pytest.mark.parametrize("auth_time", [10**400, -(10**400), float("inf"), float("nan"), 1e300])
def test_an_absurd_auth_time_is_not_fresh_and_never_raises(auth_time: object) -> None:
    rule = StepUp(reasons=frozenset(), acr=frozenset(), max_auth_age_s=300, otherwise="mask")
    assert unmet_step_up(rule, "AccountManagement", {"auth_time": auth_time}, 1.8e9) == "auth_time"
