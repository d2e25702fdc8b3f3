"""piigate_dev.localvault.masking: Piiano's documented `mask` outputs, and the rules around them."""

from __future__ import annotations

import pytest

from piigate_dev.localvault.masking import (
    MASKABLE_TYPES,
    UnsupportedTransformation,
    mask,
    supports_mask,
)


@pytest.mark.parametrize(
    ("data_type", "value", "expected"),
    [
        # The documented examples (shared/reference/piiano-vault-api.md), verbatim.
        ("SSN", "123-12-1234", "***-**-1234"),
        ("EMAIL", "john@gmail.com", "j***@gmail.com"),
        ("PHONE_NUMBER", "+972-54-1234567", "*********4567"),
        ("CC_NUMBER", "4580458045804580", "************4580"),
        ("NAME", "John Doe", "J*** D**"),
        ("DATE_OF_BIRTH", "2024-11-08", "2024-**-**"),
        ("DATE", "2024-11-08", "2024-**-**"),
        ("ZIP_CODE_US", "12345", "123**"),
        ("BAN", "12345677917", "*******7917"),
        ("STRING", "word word", "**** ****"),
    ],
)
def test_documented_examples(data_type: str, value: str, expected: str) -> None:
    assert mask(data_type, value) == expected


@pytest.mark.parametrize(
    ("data_type", "value", "expected"),
    [
        ("SSN", "123121234", "***-**-1234"),  # undashed SSNs mask the same
        ("CC_NUMBER", "4580 4580 4580 4580", "************4580"),  # separators dropped
        ("PHONE_NUMBER", "(054) 123-4567", "******4567"),
        ("ZIP_CODE_US", "12345-6789", "123**-****"),
        ("ZIP_CODE_US", 12345, "123**"),  # integers are masked as their digits
        ("NAME", "Ana", "A**"),
        ("EMAIL", "x@example.org", "x***@example.org"),
        ("EMAIL", "not-an-email", "************"),
        ("STRING", "", ""),
        ("BAN", "123", "***"),  # too short to show "the last four": all hidden
    ],
)
def test_rules_beyond_the_examples(data_type: str, value: object, expected: str) -> None:
    assert mask(data_type, value) == expected


def test_documented_types_are_maskable() -> None:
    documented = {"SSN", "EMAIL", "PHONE_NUMBER", "CC_NUMBER", "NAME", "DATE_OF_BIRTH", "DATE",
                  "ZIP_CODE_US", "STRING", "BAN"}  # fmt: skip
    assert documented <= MASKABLE_TYPES
    assert all(supports_mask(data_type) for data_type in documented)


def test_unsupported_type_is_refused_without_the_value() -> None:
    with pytest.raises(UnsupportedTransformation) as caught:
        mask("BOOLEAN", "secret-value")
    assert caught.value.data_type_name == "BOOLEAN"
    assert "secret-value" not in str(caught.value)
    assert not supports_mask("JSON")


@pytest.mark.parametrize("value", [None, True, 1.5, ["123-12-1234"]])
def test_non_text_values_are_refused_without_the_value(value: object) -> None:
    with pytest.raises(TypeError) as caught:
        mask("SSN", value)
    assert "123-12-1234" not in str(caught.value)
