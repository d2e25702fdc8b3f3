"""piigate_dev.localvault.params: reasons, both list encodings, props, options, expiration."""

from __future__ import annotations

import pytest

from piigate_dev.localvault.errors import (
    AdhocReasonMissing,
    ReasonInvalid,
    ReasonMissing,
    RequestInvalid,
)
from piigate_dev.localvault.params import (
    AUDIT_TEXT_MAX,
    LIST_MAX,
    REASONS,
    PropRef,
    list_param,
    parse_expiration,
    parse_options,
    parse_props,
    parse_purpose,
)


def test_exactly_the_ten_reasons() -> None:
    assert len(REASONS) == 10
    assert {"AppFunctionality", "Other", "DataSubjectRequest"} <= REASONS


@pytest.mark.parametrize(
    "query",
    [
        [("token_ids", "a"), ("token_ids", "b"), ("token_ids", "c")],  # repeated keys
        [("token_ids", "a,b,c")],  # comma-separated
        [("token_ids", "a,b"), ("token_ids", "c")],  # mixed
        [("token_ids", "a, b,,c"), ("token_ids", ""), ("token_ids", "a")],  # blanks, duplicates
    ],
)
def test_both_list_encodings(query: list[tuple[str, str]]) -> None:
    assert list_param(query, "token_ids") == ("a", "b", "c")


def test_list_absent_is_empty_and_other_keys_ignored() -> None:
    assert list_param([("tags", "x")], "token_ids") == ()


def test_list_is_bounded() -> None:
    query = [("token_ids", ",".join(str(i) for i in range(LIST_MAX + 1)))]
    with pytest.raises(RequestInvalid):
        list_param(query, "token_ids")


def test_reason_rules() -> None:
    assert parse_purpose([("reason", "AppFunctionality")]).reason == "AppFunctionality"
    with pytest.raises(ReasonMissing):
        parse_purpose([])
    with pytest.raises(ReasonMissing):
        parse_purpose([("reason", " ")])
    with pytest.raises(ReasonInvalid):
        parse_purpose([("reason", "appfunctionality")])  # exact spelling only
    with pytest.raises(RequestInvalid):
        parse_purpose([("reason", "Analytics"), ("reason", "Marketing")])


def test_other_requires_adhoc_reason() -> None:
    with pytest.raises(AdhocReasonMissing):
        parse_purpose([("reason", "Other")])
    with pytest.raises(AdhocReasonMissing):
        parse_purpose([("reason", "Other"), ("adhoc_reason", "  ")])
    purpose = parse_purpose([("reason", "Other"), ("adhoc_reason", "ticket 42")])
    assert purpose.adhoc_reason == "ticket 42"


def test_free_texts_are_capped() -> None:
    purpose = parse_purpose(
        [("reason", "Other"), ("adhoc_reason", "a" * 1000), ("custom_audit", "c" * 1000)]
    )
    assert purpose.adhoc_reason == "a" * AUDIT_TEXT_MAX
    assert purpose.custom_audit == "c" * AUDIT_TEXT_MAX


def test_props_with_transformations() -> None:
    refs = parse_props(["ssn", "email.mask"])
    assert refs == (PropRef("ssn"), PropRef("email", "mask"))
    assert [ref.key for ref in refs] == ["ssn", "email.mask"]


@pytest.mark.parametrize("item", [".mask", "ssn.", "ssn.mask.more"])
def test_malformed_props(item: str) -> None:
    with pytest.raises(RequestInvalid):
        parse_props([item])


def test_options() -> None:
    allowed = frozenset({"include_metadata"})
    assert parse_options([("options", "include_metadata")], allowed) == allowed
    assert parse_options([], allowed) == frozenset()
    with pytest.raises(RequestInvalid):
        parse_options([("options", "archived")], allowed)


@pytest.mark.parametrize(("text", "expected"), [(None, None), ("-1", None), ("60", 60), ("1", 1)])
def test_expiration(text: str | None, expected: int | None) -> None:
    query = [] if text is None else [("expiration_secs", text)]
    assert parse_expiration(query) == expected


@pytest.mark.parametrize("text", ["0", "-5", "soon", "1.5"])
def test_bad_expiration(text: str) -> None:
    with pytest.raises(RequestInvalid):
        parse_expiration([("expiration_secs", text)])
