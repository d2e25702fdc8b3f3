"""piigate_dev.localvault.policy: what a key may do; least privilege down to `ssn.mask`."""

from __future__ import annotations

import secrets

from piigate_dev.localvault.policy import (
    ApiKey,
    Policy,
    admin_key,
    authenticate,
    secret_digest,
)


def policy(ops: str, collections: str, props: str, reasons: str) -> Policy:
    return Policy(*(frozenset(text.split()) for text in (ops, collections, props, reasons)))


SUPPORT = ApiKey(
    "support",
    secret_digest("s"),
    (policy("detokenize", "users", "ssn.mask email.mask", "AccountManagement"),),
)
FHIR = ApiKey(
    "fhir",
    secret_digest("f"),
    (
        policy("detokenize", "users", "user_id", "AppFunctionality"),
        policy("read", "users", "*", "Analytics Maintenance"),
    ),
)


def test_mask_only_key_gets_masks_not_raw_values() -> None:
    assert (
        SUPPORT.denial("detokenize", "users", ["ssn.mask", "email.mask"], "AccountManagement")
        is None
    )
    assert SUPPORT.denial("detokenize", "users", ["ssn"], "AccountManagement") == {
        "operation": "detokenize",
        "property": "ssn",
    }
    assert SUPPORT.denial("detokenize", "users", ["user_id.mask"], "AccountManagement") is not None


def test_raw_access_implies_transformed_access() -> None:
    assert (
        FHIR.denial("detokenize", "users", ["user_id", "user_id.mask"], "AppFunctionality") is None
    )
    assert FHIR.denial("detokenize", "users", ["ssn"], "AppFunctionality") is not None


def test_transformation_patterns() -> None:
    key = ApiKey("k", b"", (policy("read", "users", "ssn.* *.mask", "*"),))
    assert key.denial("read", "users", ["ssn.mask", "email.mask"], "Analytics") is None
    assert key.denial("read", "users", ["ssn"], "Analytics") == {
        "operation": "read",
        "property": "ssn",
    }


def test_operation_reason_and_collection_must_match_the_same_policy() -> None:
    assert FHIR.denial("tokenize", "users", [], "AppFunctionality") == {
        "operation": "tokenize",
        "collection": "users",
    }
    assert FHIR.denial("detokenize", "users", ["user_id"], "Marketing") == {
        "operation": "detokenize",
        "reason": "Marketing",
    }
    # `read` on every property is allowed, but only for its own reasons.
    assert FHIR.denial("read", "users", ["ssn"], "Analytics") is None
    assert FHIR.denial("read", "users", ["ssn"], "AppFunctionality") is not None
    assert FHIR.denial("detokenize", "orders", [], "AppFunctionality") is not None


def test_visibility() -> None:
    assert FHIR.can_see("users")
    assert not FHIR.can_see("orders")
    assert admin_key("admin", "x").can_see("anything")


def test_control_calls_carry_no_reason() -> None:
    assert admin_key("a", "x").denial("write", "users", ["*"], None) is None
    assert SUPPORT.denial("write", "users", ["*"], None) is not None


def test_authenticate_finds_the_key_by_its_secret() -> None:
    first, second = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    keys = [admin_key("first", first), admin_key("second", second)]
    found = authenticate(keys, second)
    assert found is not None
    assert found.name == "second"
    assert authenticate(keys, second + "x") is None
    assert authenticate(keys, "") is None
    assert authenticate([], first) is None


def test_repr_hides_the_digest() -> None:
    key = admin_key("admin", "topsecret")
    assert secret_digest("topsecret").hex() not in repr(key)
    assert "topsecret" not in repr(key)
