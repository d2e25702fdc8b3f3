"""The dev issuer's private_key_jwt check (RFC 7523 §3), rule by rule, without a server;
and how a client registers its public keys in the issuer config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from piigate_dev.devissuer.assertion import (
    JWT_BEARER,
    AssertionCheck,
    AssertionRejected,
    AssertionReplay,
    verify_client_assertion,
)
from piigate_dev.devissuer.config import ConfigError, IssuerConfig, parse_issuer_config
from piigate_dev.devissuer.oauth import OAuthError, authorize, parse_token_request
from tests.support.clientkeys import client_key

TOKEN_URL = "http://127.0.0.1:9000/oauth/token"
NOW = 1_800_000_000.0
KEY = client_key("ES256", "k-1")
SECOND = client_key("RS256", "k-2")


def config(*jwks: dict[str, str]) -> IssuerConfig:
    data = {"clients": [{"client_id": "svc", "jwks": list(jwks) or [KEY.public_jwk],
                         "audiences": ["piigate"]}]}
    return parse_issuer_config(data, Path("."), {})


def assertion(key: Any = KEY, headers: dict[str, str] | None = None, **claims: Any) -> str:
    body = {"iss": "svc", "sub": "svc", "aud": TOKEN_URL, "jti": "j-1", "iat": NOW,
            "exp": NOW + 60, **claims}
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key.private_pem, algorithm=key.algorithm,
                      headers=headers if headers is not None else {"kid": key.kid})


def check(replay: AssertionReplay | None = None, now: float = NOW) -> AssertionCheck:
    return AssertionCheck(frozenset({TOKEN_URL}), now, replay or AssertionReplay())


def test_a_good_assertion_authenticates_its_client() -> None:
    assert verify_client_assertion(assertion(), None, config(), check()).client_id == "svc"
    assert verify_client_assertion(assertion(), "svc", config(), check()).client_id == "svc"


@pytest.mark.parametrize(
    ("token", "client_id", "rule"),
    [
        (assertion(iss="other"), None, "iss and sub"),
        (assertion(sub="other"), None, "iss and sub"),
        (assertion(), "other", "client_id differs"),
        (assertion(SECOND, headers={"kid": "k-2"}), None, "kid names none"),
        (assertion(client_key("ES256", "k-1")), None, "InvalidSignatureError"),
        (assertion(aud="http://elsewhere/token"), None, "InvalidAudienceError"),
        (assertion(jti=None), None, "MissingRequiredClaimError"),
        (assertion(exp=NOW - 31), None, "expired"),
        (assertion(exp=NOW + 3600), None, "300 s ahead"),
        (assertion(iat=NOW + 120), None, "iat is in the future"),
        ("a.b.c", None, "not a JWT"),
        ("x" * 9000, None, "too large"),
    ],
)
def test_each_rule(token: str, client_id: str | None, rule: str) -> None:
    with pytest.raises(AssertionRejected, match=rule) as caught:
        verify_client_assertion(token, client_id, config(), check())
    assert token not in str(caught.value)


def test_an_hs256_assertion_is_refused_before_any_key_is_chosen() -> None:
    forged = jwt.encode({"iss": "svc", "sub": "svc"}, "k" * 32, algorithm="HS256")
    with pytest.raises(AssertionRejected, match="alg must be one of"):
        verify_client_assertion(forged, None, config(), check())


def test_with_several_keys_the_kid_chooses() -> None:
    both = config(KEY.public_jwk, SECOND.public_jwk)
    assert verify_client_assertion(assertion(SECOND, headers={"kid": "k-2"}), None, both,
                                   check()).client_id == "svc"
    with pytest.raises(AssertionRejected, match="kid"):
        verify_client_assertion(assertion(headers={}), None, both, check())


def test_a_jti_is_good_once_until_its_exp() -> None:
    replay = AssertionReplay()
    verify_client_assertion(assertion(), None, config(), check(replay))
    with pytest.raises(AssertionRejected, match="jti was used before"):
        verify_client_assertion(assertion(), None, config(), check(replay))
    later = NOW + 60 + 31  # the first one's exp (and leeway) has passed: forgotten
    verify_client_assertion(assertion(iat=later, exp=later + 60), None, config(),
                            check(replay, now=later))


def test_the_replay_memory_refuses_when_full() -> None:
    replay = AssertionReplay(capacity=1)
    replay.remember("svc", "a", NOW + 60, NOW)
    with pytest.raises(AssertionRejected, match="too many"):
        replay.remember("svc", "b", NOW + 60, NOW)


def test_token_request_parsing_for_assertions() -> None:
    form = {"grant_type": "client_credentials", "audience": "piigate",
            "client_assertion_type": JWT_BEARER, "client_assertion": assertion()}
    request = parse_token_request(form.items(), None)
    assert "client_assertion" not in repr(request)
    assert authorize(request, config(), check()).client_id == "svc"
    with pytest.raises(OAuthError, match="not accepted here"):
        authorize(request, config(), None)
    for extra, auth in (({"client_secret": "s"}, None), ({}, "Basic c3ZjOnM=")):
        with pytest.raises(OAuthError, match="one client authentication method"):
            parse_token_request({**form, **extra}.items(), auth)
    with pytest.raises(OAuthError, match="client_assertion_type must be"):
        parse_token_request({**form, "client_assertion_type": "saml"}.items(), None)


def test_a_keys_only_client_has_no_secret() -> None:
    form = {"grant_type": "client_credentials", "audience": "piigate", "client_id": "svc",
            "client_secret": "\x00no such client"}
    with pytest.raises(OAuthError, match="client authentication failed"):
        authorize(parse_token_request(form.items(), None), config(), check())


def test_registering_public_keys_in_the_config() -> None:
    private = {**KEY.public_jwk, "d": "c2VjcmV0"}
    data = {"clients": [
        {"client_id": "a", "jwks": [private], "audiences": ["*"]},
        {"client_id": "b", "jwks": [KEY.public_jwk], "secret_sha256": "0" * 64,
         "audiences": ["*"]},
        {"client_id": "c", "jwks": [], "audiences": ["*"]},
        {"client_id": "d", "jwks": [{**KEY.public_jwk, "crv": "P-521"}], "audiences": ["*"]},
        {"client_id": "e", "jwks": [KEY.public_jwk, KEY.public_jwk], "audiences": ["*"]},
    ]}
    with pytest.raises(ConfigError) as caught:
        parse_issuer_config(data, Path("."), {})
    problems = dict(caught.value.problems)
    assert problems["clients[0].jwks[0]"].startswith("holds private key members")
    assert "c2VjcmV0" not in str(caught.value)
    assert problems["clients[1]"].startswith("needs exactly one of")
    assert problems["clients[2].jwks"].startswith("must be a non-empty array")
    assert problems["clients[3].jwks[0]"].startswith("must be an RSA key or an EC key")
    assert problems["clients[4].jwks[1].kid"] == "duplicate kid 'k-1'"
