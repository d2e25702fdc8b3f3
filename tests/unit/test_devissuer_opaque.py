"""The dev issuer's opaque tokens, pure: the store (issue, introspect, revoke, bounds),
the introspection request's parsing, the clients' `token_format` and the discovery
document's introspection endpoint."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from piigate_dev.devissuer.api import discovery_document
from piigate_dev.devissuer.config import ConfigError, parse_issuer_config
from piigate_dev.devissuer.oauth import OAuthError, parse_introspection_request
from piigate_dev.devissuer.opaque import PREFIX, OpaqueTokens

CLAIMS = {"iss": "http://127.0.0.1:9000/", "sub": "auth0|alice", "azp": "fhir-app",
          "iat": 100, "exp": 200}


def test_a_token_stands_for_its_claims_until_exp() -> None:
    store = OpaqueTokens()
    token = store.issue(CLAIMS, now=100)
    assert token.startswith(PREFIX)
    assert len(token) > len(PREFIX) + 40  # 256 random bits
    assert store.introspect(token, 150) == {"active": True, **CLAIMS, "token_type": "Bearer",
                                            "client_id": "fhir-app"}
    assert store.introspect(token, 200) == {"active": False}
    assert store.introspect(PREFIX + "nope", 150) == {"active": False}
    assert store.issue(CLAIMS, now=100) != token


def test_a_revoked_token_is_inactive_and_revoking_twice_says_so() -> None:
    store = OpaqueTokens()
    token = store.issue(CLAIMS, now=100)
    assert store.revoke(token)
    assert not store.revoke(token)
    assert store.introspect(token, 150) == {"active": False}


def test_the_store_keeps_hashes_not_tokens_and_is_bounded() -> None:
    store = OpaqueTokens(capacity=2)
    old = store.issue({**CLAIMS, "exp": 120}, now=100)
    live = store.issue(CLAIMS, now=100)
    assert old not in repr(vars(store))
    newer = store.issue(CLAIMS, now=130)  # full: the expired one goes first
    assert len(store) == 2
    assert store.introspect(live, 150)["active"] is True
    newest = store.issue(CLAIMS, now=130)  # full of live tokens: the oldest goes
    assert store.introspect(live, 150) == {"active": False}
    assert store.introspect(newer, 150)["active"] is True
    assert store.introspect(newest, 150)["active"] is True
    with pytest.raises(ValueError, match="exp"):
        store.issue({"sub": "x"}, now=100)


def test_an_introspection_request_needs_a_token_and_one_client_authentication() -> None:
    basic = "Basic " + base64.b64encode(b"piigate:secret").decode()
    token, credentials = parse_introspection_request(
        [("token", "t"), ("token_type_hint", "access_token")], basic)
    assert (token, credentials.client_id, credentials.used_basic) == ("t", "piigate", True)
    for params, authorization in (([], basic), ([("token", "a"), ("token", "b")], basic),
                                  ([("token", "t"), ("client_secret", "s")], basic)):
        with pytest.raises(OAuthError) as caught:
            parse_introspection_request(params, authorization)
        assert caught.value.error == "invalid_request"
    with pytest.raises(OAuthError) as caught:
        parse_introspection_request([("token", "t")], None)
    assert (caught.value.error, caught.value.status) == ("invalid_client", 401)


def test_a_client_may_be_given_opaque_tokens() -> None:
    client = {"client_id": "m2m", "secret_sha256": "0" * 64, "audiences": ["*"]}
    config = parse_issuer_config({"clients": [{**client, "token_format": "opaque"},
                                              {**client, "client_id": "jwt"}]}, Path("."), {})
    assert [c.opaque_tokens for c in config.clients] == [True, False]
    with pytest.raises(ConfigError) as caught:
        parse_issuer_config({"clients": [{**client, "token_format": "ref"}]}, Path("."), {})
    assert caught.value.problems == [("clients[0].token_format", 'must be "jwt" or "opaque"')]


def test_discovery_advertises_introspection() -> None:
    document = discovery_document("http://127.0.0.1:9000/", "http://127.0.0.1:9000", ["RS256"])
    assert document["introspection_endpoint"] == "http://127.0.0.1:9000/introspect"
    assert document["introspection_endpoint_auth_methods_supported"] == [
        "client_secret_basic", "client_secret_post", "private_key_jwt"]
