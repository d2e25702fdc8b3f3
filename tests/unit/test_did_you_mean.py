"""A typo in a key or an enum-like value is named with its closest spelling; an unknown
issuer kind is one problem, not two."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, parse_config
from piigate.config.reader import did_you_mean, one_of

ENV = {"VAULT_KEY": "k-123"}
BASE: dict[str, Any] = {
    "vault": {"url": "http://127.0.0.1:8123"},
    "caller": {"issuers": ["auth0"]},
    "issuers": [{"name": "auth0", "kind": "auth0", "issuer": "https://example.us.auth0.com/"}],
    "profiles": {
        "support": {
            "callers": ["support-tool"],
            "audiences": ["https://support.example.com"],
            "reasons": ["AccountManagement"],
            "collection": "users",
            "vault_api_key_env": "VAULT_KEY",
            "fields": {"ssn": "mask"},
        }
    },
}


def problems(change: dict[str, Any]) -> list[str]:
    """The problems of BASE with `change` merged in (`{"issuers": [{...}]}` merges into
    the first issuer)."""
    data = copy.deepcopy(BASE)
    for section, values in change.items():
        if section == "issuers":
            data["issuers"][0].update(values[0])
        elif isinstance(values, dict) and isinstance(data.get(section), dict):
            _merge(data[section], values)
        else:
            data[section] = values
    with pytest.raises(ConfigError) as caught:
        parse_config(data, ENV, Path("."))
    return caught.value.problems


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def test_the_base_config_is_valid() -> None:
    assert parse_config(copy.deepcopy(BASE), ENV, Path(".")).issuers[0].kind == "auth0"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"server": {"max_batch_sise": 10}},
         "server.max_batch_sise: unknown key; did you mean 'max_batch_size'?"),
        ({"sever": {}}, "sever: unknown key; did you mean 'server'?"),
        ({"vault": {"timout_ms": 5}}, "vault.timout_ms: unknown key; did you mean 'timeout_ms'?"),
        ({"issuers": [{"pii_token_clam": "x"}]},
         "issuers[0].pii_token_clam: unknown key; did you mean 'pii_token_claim'?"),
        ({"profiles": {"support": {"field": {"ssn": "mask"}}}},
         "profiles.support.field: unknown key; did you mean 'fields'?"),
        ({"audit": {"Sink": "stdout"}}, "audit.Sink: unknown key; did you mean 'sink'?"),
    ],
)
def test_an_unknown_key_names_the_closest_allowed_one(
    change: dict[str, Any], expected: str
) -> None:
    assert expected in problems(change)


def test_an_unknown_key_close_to_nothing_gets_no_guess() -> None:
    assert "server.colour: unknown key" in problems({"server": {"colour": "blue"}})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"issuers": [{"typ": "at-jwt"}]},
         "issuers[0].typ: must be one of at+jwt, any, keycloak, cognito; did you mean 'at+jwt'?"),
        ({"audit": {"sink": "files"}}, "audit.sink: must be stdout or file; did you mean 'file'?"),
        ({"server": {"event_loop": "uv_loop"}},
         "server.event_loop: must be uvloop or asyncio; did you mean 'uvloop'?"),
        ({"state": {"backend": "reddis"}},
         "state.backend: must be memory or redis; did you mean 'redis'?"),
        ({"profiles": {"support": {"fields": {"ssn": "masked"}}}},
         "profiles.support.fields.ssn: must be one of raw, mask, redact; did you mean 'mask'?"),
        ({"profiles": {"support": {"limits": {"on_store_failure": "fail-open"}}}},
         "profiles.support.limits.on_store_failure: must be fail_closed or fail_open; "
         "did you mean 'fail_open'?"),
    ],
)
def test_an_enum_like_value_names_the_closest_choice(
    change: dict[str, Any], expected: str
) -> None:
    assert expected in problems(change)


def test_a_misspelt_vault_reason_names_the_closest_reason() -> None:
    found = problems({"profiles": {"support": {"reasons": ["AccountManagment"]}}})
    assert any(p.startswith("profiles.support.reasons: 'AccountManagment' is not a vault reason")
               and p.endswith("did you mean 'AccountManagement'?") for p in found), found


def test_an_unknown_issuer_kind_is_one_problem_with_a_guess() -> None:
    assert problems({"issuers": [{"kind": "auth0x"}]}) == [
        "issuers[0].kind: must be one of auth0, keycloak, cognito, okta, frontegg, generic; "
        "did you mean 'auth0'?"
    ]


def test_an_unknown_kind_still_reports_the_tables_other_mistakes() -> None:
    found = problems({"issuers": [{"kind": "okta2", "leeway_s": 600, "jwks_uri": "ftp://x"}]})
    assert found == [
        "issuers[0].kind: must be one of auth0, keycloak, cognito, okta, frontegg, generic; "
        "did you mean 'okta'?",
        "issuers[0].jwks_uri: must be an http(s) URL",
        "issuers[0].leeway_s: must be between 0 and 60 seconds",
    ]


def test_a_suggestion_never_quotes_the_value_itself() -> None:
    secret = "sk_live_51HqLyjWDarjtT1zdp7dc"
    found = problems({"audit": {"sink": secret}})
    assert found == ["audit.sink: must be stdout or file"]
    assert secret not in did_you_mean(secret, ["stdout", "file"])


def test_the_helpers_directly() -> None:
    assert did_you_mean("Okta", {"okta", "auth0"}) == "; did you mean 'okta'?"
    assert did_you_mean(42, {"okta"}) == ""
    assert one_of("a", "b")("a") is None
    assert one_of("raw", "mask", "redact")("nope") == "must be one of raw, mask, redact"
