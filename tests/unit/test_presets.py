"""Identity-provider presets and the issuer section of the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, IssuerConfig, parse_config


def config_with(issuer: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "vault": {"url": "https://vault.example"},
        "issuers": [{"name": "idp", **issuer}],
        "profiles": {"p": {"callers": ["c"], "audiences": ["a"], "collection": "users",
                           "vault_api_key_env": "K", "fields": {"ssn": "mask"}}},
    }
    if caller is not None:
        data["caller"] = caller
    return data


def issuer_of(issuer: dict[str, Any], caller: dict[str, Any] | None = None) -> IssuerConfig:
    return parse_config(config_with(issuer, caller), {"K": "k"}, Path(".")).issuers[0]


def problems(issuer: dict[str, Any], caller: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(issuer, caller), {"K": "k"}, Path("."))
    return caught.value.problems


def test_auth0_preset() -> None:
    i = issuer_of({"kind": "auth0", "issuer": "https://example.us.auth0.com/"})
    assert i.jwks_uri == "https://example.us.auth0.com/.well-known/jwks.json"
    assert (i.typ, i.client_id_claims, i.audience_claims) == ("any", ("azp", "client_id"), ("aud",))
    assert i.scope_claims == ("scope", "permissions")


def test_auth0_issuer_must_keep_its_trailing_slash() -> None:
    found = problems({"kind": "auth0", "issuer": "https://example.us.auth0.com"})
    assert any("auth0 issuers end with '/'" in p for p in found)


@pytest.mark.parametrize(
    ("kind", "issuer", "jwks", "typ", "client_id"),
    [
        ("keycloak", "https://kc.example/realms/acme",
         "https://kc.example/realms/acme/protocol/openid-connect/certs", "keycloak", ("azp",)),
        ("cognito", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc",
         "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Abc/.well-known/jwks.json",
         "cognito", ("client_id",)),
        ("okta", "https://acme.okta.com/oauth2/default",
         "https://acme.okta.com/oauth2/default/v1/keys", "any", ("cid",)),
        ("frontegg", "https://acme.frontegg.com",
         "https://acme.frontegg.com/.well-known/jwks.json", "any", ("azp", "client_id")),
    ],
)
def test_presets_derive_jwks_and_token_shape(
    kind: str, issuer: str, jwks: str, typ: str, client_id: tuple[str, ...]
) -> None:
    caller = {"required_scopes": ["piigate/detokenize"]} if kind == "cognito" else None
    i = issuer_of({"kind": kind, "issuer": issuer}, caller)
    assert (i.jwks_uri, i.typ, i.client_id_claims) == (jwks, typ, client_id)


def test_cognito_reads_the_audience_from_client_id_and_needs_a_caller_scope() -> None:
    cognito = {"kind": "cognito", "issuer": "https://cognito-idp.x.amazonaws.com/pool"}
    assert any(p.startswith("caller.required_scopes: issuer 'idp' (cognito)")
               for p in problems(cognito))
    i = issuer_of(cognito, {"required_scopes": ["piigate/detokenize"]})
    assert i.audience_claims == ("client_id",)
    assert not i.caller_audience_in_token
    # Cognito used for subject tokens only needs no caller scope.
    assert issuer_of(cognito, {"issuers": []}).kind == "cognito"


def test_every_preset_value_can_be_overridden() -> None:
    i = issuer_of({"kind": "auth0", "issuer": "https://a.auth0.com/", "typ": "at+jwt",
                   "jwks_uri": "https://keys.example/jwks", "client_id_claims": ["azp"]})
    assert (i.typ, i.jwks_uri, i.client_id_claims) == ("at+jwt", "https://keys.example/jwks",
                                                       ("azp",))


def test_generic_needs_a_jwks_uri_or_discovery() -> None:
    assert any("jwks_uri: is required for kind generic" in p
               for p in problems({"issuer": "https://idp.example/"}))
    assert issuer_of({"issuer": "https://idp.example/", "discovery": True}).jwks_uri is None
    assert any("give jwks_uri or discovery = true, not both" in p for p in problems(
        {"issuer": "https://idp.example/", "discovery": True, "jwks_uri": "https://x/jwks"}))


def test_unknown_kind_and_bad_jwks_settings() -> None:
    assert any("kind: must be one of auth0, keycloak" in p
               for p in problems({"kind": "azure", "issuer": "https://x/"}))
    found = problems({"issuer": "https://x/", "jwks_uri": "https://x/jwks",
                      "jwks_min_ttl_s": 600, "jwks_max_ttl_s": 60})
    assert "issuers[0].jwks_min_ttl_s: must not exceed jwks_max_ttl_s" in found


def test_plain_http_derived_jwks_refused_off_loopback() -> None:
    found = problems({"kind": "keycloak", "issuer": "http://kc.internal/realms/a"})
    assert any("must use https unless the host is loopback" in p for p in found)
