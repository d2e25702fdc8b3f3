"""Shaping: profile order, masked keys in either form, redaction, nothing unplanned."""

from __future__ import annotations

from types import MappingProxyType

from piigate.config import Disposition, Profile
from piigate.policy.decision import Plan
from piigate.policy.shaping import shape


def plan(fields: dict[str, Disposition]) -> Plan:
    profile = Profile(
        name="p", callers=frozenset({"c"}), audiences=frozenset({"a"}),
        required_scopes=frozenset(), reasons=frozenset({"AppFunctionality"}),
        default_reason="AppFunctionality", collection="users",
        fields=MappingProxyType(fields), vault_api_key="k", one_time_tokens=False,
    )
    return Plan(profile, "AppFunctionality", None, tuple(fields.items()))


def test_plan_asks_the_vault_for_masks_and_never_for_redacted_fields() -> None:
    p = plan({"user_id": "raw", "ssn": "mask", "email": "redact"})
    assert p.vault_props == ("user_id", "ssn.mask")


def test_fields_come_back_in_profile_order_with_their_disclosure() -> None:
    p = plan({"user_id": "raw", "ssn": "mask", "email": "redact"})
    out = shape(p, {"ssn.mask": "***-**-1234", "user_id": "u-1"})
    assert [(f.name, f.value, f.disclosure) for f in out] == [
        ("user_id", "u-1", "raw"),
        ("ssn", "***-**-1234", "masked"),
        ("email", "", "redacted"),
    ]


def test_masked_value_keyed_by_the_bare_property_is_accepted() -> None:
    out = shape(plan({"ssn": "mask"}), {"ssn": "***-**-1234"})
    assert [(f.value, f.disclosure) for f in out] == [("***-**-1234", "masked")]


def test_raw_field_is_not_filled_from_a_masked_key() -> None:
    assert shape(plan({"ssn": "raw"}), {"ssn.mask": "***-**-1234"}) == ()


def test_unplanned_properties_are_dropped_and_values_stay_out_of_repr() -> None:
    out = shape(plan({"user_id": "raw"}), {"user_id": "u-1", "ssn": "123-45-6789"})
    assert [f.name for f in out] == ["user_id"]
    assert "u-1" not in repr(out)


def test_non_string_values_are_carried_as_json_text() -> None:
    out = shape(plan({"age": "raw", "vip": "raw"}), {"age": 42, "vip": True})
    assert [f.value for f in out] == ["42", "true"]
