"""The namespaced claim is one opaque key, and its value must look like a token id."""

from __future__ import annotations

import pytest

from piigate.errors import PiiTokenClaimInvalid, PiiTokenClaimMissing
from piigate.identity.pii_claim import pii_token_id

CLAIM = "https://example.com/pii_token"


def test_reads_the_namespaced_claim_as_one_key() -> None:
    claims = {
        CLAIM: "3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d",
        "https://example": {"com/pii_token": "x"},
    }
    assert pii_token_id(claims, CLAIM) == "3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d"


def test_a_dotted_path_is_not_followed() -> None:
    with pytest.raises(PiiTokenClaimMissing):
        pii_token_id({"https://example": {"com/pii_token": "abc"}}, CLAIM)


@pytest.mark.parametrize(
    "value", ["", "a b", "../admin", "x" * 129, 42, None, ["abc"], "abc&token_ids=other",
              "-\n", "abc\n", "\nabc", "abc\r", "abc\x00"]
)
def test_malformed_values_are_refused_before_reaching_the_vault(value: object) -> None:
    with pytest.raises(PiiTokenClaimInvalid):
        pii_token_id({CLAIM: value}, CLAIM)


def test_a_path_walks_into_nested_objects() -> None:
    claims = {"app_metadata": {"pii_token": "tok-1"}, "app_metadata.pii_token": "flat"}
    assert pii_token_id(claims, ("app_metadata", "pii_token")) == "tok-1"
    # A path of one name is that name whole, dots and all.
    assert pii_token_id(claims, ("app_metadata.pii_token",)) == "flat"
    assert pii_token_id({CLAIM: "tok-2"}, (CLAIM,)) == "tok-2"


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({}, PiiTokenClaimMissing),
        ({"app_metadata": {}}, PiiTokenClaimMissing),
        ({"app_metadata": "tok-1"}, PiiTokenClaimInvalid),  # not an object to walk into
        ({"app_metadata": ["pii_token"]}, PiiTokenClaimInvalid),
        ({"app_metadata": {"pii_token": {"id": "tok-1"}}}, PiiTokenClaimInvalid),
    ],
)
def test_a_path_that_ends_early_or_hits_a_non_object_is_refused(
    claims: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        pii_token_id(claims, ("app_metadata", "pii_token"))
