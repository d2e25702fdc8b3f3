"""The profile decision: deny by default, permission before existence, profile order."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from piigate.caller import Caller
from piigate.claims import claim_values, granted_scopes
from piigate.config import Disposition, Profile
from piigate.errors import (
    AudienceNotAccepted,
    CallerWithoutProfile,
    FieldNameInvalid,
    FieldNotAllowed,
    ReasonInvalid,
    ReasonNotAllowed,
    ScopeMissing,
)
from piigate.policy import DisclosureRequest, ProfileIndex, decide

SUPPORT = Profile(
    name="support", callers=frozenset({"support-tool"}), audiences=frozenset({"support-ui"}),
    required_scopes=frozenset({"read:support"}),
    reasons=frozenset({"AccountManagement", "Other"}), default_reason="AccountManagement",
    collection="users",
    fields=MappingProxyType({"user_id": "redact", "ssn": "mask", "email": "mask"}),
    vault_api_key="k", one_time_tokens=False,
)


def subject(aud: Any = "support-ui") -> frozenset[str]:
    """The audiences a subject token with this `aud` claim presents."""
    return claim_values({"aud": aud}, ("aud",))


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
    plan = decide(SUPPORT, subject(), SCOPES, ask())
    fields: tuple[tuple[str, Disposition], ...] = (
        ("user_id", "redact"), ("ssn", "mask"), ("email", "mask"),
    )
    assert plan.fields == fields
    assert plan.reason == "AccountManagement"
    assert plan.vault_props == ("ssn.mask", "email.mask")


def test_a_subset_can_be_asked_for() -> None:
    plan = decide(SUPPORT, subject(), SCOPES, ask(("email", "ssn")))
    assert [name for name, _ in plan.fields] == ["ssn", "email"]


@pytest.mark.parametrize("aud", ["fhir", ["fhir", "https://idp/userinfo"], [], None])
def test_a_token_for_another_audience_is_refused(aud: Any) -> None:
    with pytest.raises(AudienceNotAccepted):
        decide(SUPPORT, subject(aud), SCOPES, ask())


def test_array_audience_containing_the_profiles_audience_is_accepted() -> None:
    plan = decide(SUPPORT, subject(("support-ui", "https://idp/userinfo")), SCOPES, ask())
    assert plan.profile is SUPPORT


def test_missing_scope_is_named_in_metadata() -> None:
    with pytest.raises(ScopeMissing) as caught:
        decide(SUPPORT, subject(), frozenset({"openid"}), ask())
    assert caught.value.metadata["missing"] == "read:support"


def test_fields_beyond_the_profile_are_refused() -> None:
    with pytest.raises(FieldNotAllowed) as caught:
        decide(SUPPORT, subject(), SCOPES, ask(("ssn", "diagnosis")))
    assert caught.value.metadata["field"] == "diagnosis"


@pytest.mark.parametrize("name", ["ssn.mask", "", "a b", "x" * 65, "ssn,email"])
def test_malformed_field_names_are_invalid_arguments(name: str) -> None:
    with pytest.raises(FieldNameInvalid):
        decide(SUPPORT, subject(), SCOPES, ask((name,)))


def test_reasons_outside_the_profile_are_refused() -> None:
    with pytest.raises(ReasonNotAllowed):
        decide(SUPPORT, subject(), SCOPES, ask(reason="Marketing"))
    with pytest.raises(ReasonInvalid):
        decide(SUPPORT, subject(), SCOPES, ask(reason="unknown reason 99"))


def test_other_needs_printable_adhoc_text_and_nothing_else_takes_it() -> None:
    plan = decide(SUPPORT, subject(), SCOPES, ask(reason="Other", adhoc="ticket 4711"))
    assert (plan.reason, plan.adhoc_reason) == ("Other", "ticket 4711")
    for bad in ("", "x" * 257, "line\nbreak"):
        with pytest.raises(ReasonInvalid):
            decide(SUPPORT, subject(), SCOPES, ask(reason="Other", adhoc=bad))
    with pytest.raises(ReasonInvalid):
        decide(SUPPORT, subject(), SCOPES, ask(adhoc="why not"))


def test_permission_is_checked_before_the_request_shape() -> None:
    # A caller whose token is for another audience learns nothing about field names.
    with pytest.raises(AudienceNotAccepted):
        decide(SUPPORT, subject("fhir"), SCOPES, ask(("no-such-field!",)))


def test_scopes_from_a_string_or_an_array() -> None:
    assert granted_scopes({"scope": "a b  c"}, ("scope", "scp")) == {"a", "b", "c"}
    assert granted_scopes({"scp": ("a", "b", 3)}, ("scope", "scp")) == {"a", "b"}
    assert granted_scopes({}, ("scope", "scp")) == frozenset()
