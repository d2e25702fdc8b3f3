"""piigate_client's token-endpoint authentication methods, without a server: what each
adds to the token request, and the private_key_jwt assertion's claims (RFC 7523 §3)."""

from __future__ import annotations

import base64

import jwt
import pytest

from piigate_client.client_auth import (
    JWT_BEARER,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
)
from piigate_client.oauth import TokenEndpointError, _token_from_answer
from tests.support.clientkeys import client_key

TOKEN_URL = "https://idp.example.com/oauth/token"


def test_basic_form_urlencodes_each_half_before_base64() -> None:
    headers, form = ClientSecretBasic("p w:+").authenticate("my:client", TOKEN_URL)
    assert form == {}
    decoded = base64.b64decode(headers["Authorization"].removeprefix("Basic ")).decode()
    assert decoded == "my%3Aclient:p+w%3A%2B"
    assert "p w" not in repr(ClientSecretBasic("p w"))


def test_post_puts_id_and_secret_in_the_body() -> None:
    assert ClientSecretPost("s").authenticate("c", TOKEN_URL) == (
        {}, {"client_id": "c", "client_secret": "s"})


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "ES384"])
def test_private_key_jwt_assertion_claims(algorithm: str) -> None:
    key = client_key(algorithm, "k-1")
    auth = PrivateKeyJwt(key.private_pem, algorithm=algorithm, key_id="k-1", clock=lambda: 1000.0)
    headers, form = auth.authenticate("svc", TOKEN_URL)
    assert headers == {}
    assert form["client_assertion_type"] == JWT_BEARER
    assertion = form["client_assertion"]
    assert jwt.get_unverified_header(assertion) == {"alg": algorithm, "kid": "k-1", "typ": "JWT"}
    claims = jwt.decode(assertion, jwt.PyJWK(key.public_jwk), algorithms=[algorithm],
                        audience=TOKEN_URL, options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == claims["sub"] == "svc"
    assert (claims["iat"], claims["exp"]) == (1000, 1060)
    second = jwt.decode(auth.assertion("svc", TOKEN_URL), options={"verify_signature": False})
    assert second["jti"] != claims["jti"]  # a new jti per request


def test_private_key_jwt_refuses_a_key_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        PrivateKeyJwt(client_key("ES256", "k").private_pem, algorithm="RS256")
    with pytest.raises(ValueError, match="does not fit"):
        PrivateKeyJwt(client_key("ES384", "k").private_pem, algorithm="ES256")
    with pytest.raises(ValueError, match="algorithm"):
        PrivateKeyJwt(client_key("RS256", "k").private_pem, algorithm="HS256")
    with pytest.raises(ValueError, match="lifetime"):
        PrivateKeyJwt(client_key("RS256", "k").private_pem, lifetime_s=3600)
    assert "PRIVATE" not in repr(PrivateKeyJwt(client_key("RS256", "k").private_pem))


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{"error": "invalid_client"}', "invalid_client"),
        (500, b"<html>", "response_not_json"),
        (200, b'{"token_type": "Bearer"}', "no_access_token"),
        (200, b'{"access_token": "t", "expires_in": true}', "no_access_token"),
        (200, b" " * (64 * 1024 + 1), "response_too_large"),
    ],
)
def test_token_answers_that_are_not_tokens(status: int, body: bytes, error: str) -> None:
    with pytest.raises(TokenEndpointError) as caught:
        _token_from_answer(status, body)
    assert (caught.value.status, caught.value.error) == (status, error)


def test_a_token_answer() -> None:
    assert _token_from_answer(200, b'{"access_token": "t", "expires_in": 60}') == ("t", 60.0)
    assert _token_from_answer(200, b'{"access_token": "t"}') == ("t", 300.0)
