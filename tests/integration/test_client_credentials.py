"""piigate_client's `ClientCredentials` against the real dev issuer, one test per client
authentication method (client_secret_basic, client_secret_post, private_key_jwt with
RS256 and ES256), through both the blocking call and `token_async`; and the issuer's
refusals of bad assertions (wrong key, wrong audience, replay, a secret for a keys-only
client)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest

from piigate_client import (
    ClientCredentials,
    ClientSecretPost,
    PrivateKeyJwt,
    TokenEndpointError,
)
from piigate_client.client_auth import JWT_BEARER
from piigate_dev.devissuer.config import parse_issuer_config
from tests.support.clientkeys import ClientKey, client_key
from tests.support.devissuer import DevIssuerHandle, running_dev_issuer

SECRET = "s3cret with spaces+plus"
RSA_KEY = client_key("RS256", "rs-1")
EC_KEY = client_key("ES256", "es-1")
OTHER_EC_KEY = client_key("ES256", "es-1")  # same kid, not registered


def _issuer_config() -> dict[str, object]:
    return {
        "clients": [
            {"client_id": "secret-app", "audiences": ["piigate"], "scopes": ["*"],
             "secret_sha256": hashlib.sha256(SECRET.encode()).hexdigest()},
            {"client_id": "rs-app", "jwks": [RSA_KEY.public_jwk], "audiences": ["piigate"]},
            {"client_id": "es-app", "jwks": [EC_KEY.public_jwk, client_key("RS256", "rs-2")
                                             .public_jwk], "audiences": ["piigate"]},
        ]
    }


@pytest.fixture
async def idp() -> AsyncIterator[DevIssuerHandle]:
    config = parse_issuer_config(_issuer_config(), Path("."), {})
    async with running_dev_issuer(config) as handle:
        yield handle


def _token_url(idp: DevIssuerHandle) -> str:
    return idp.base_url + "/oauth/token"


def _client_id_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["client_id"])


def _jwt_auth(key: ClientKey) -> PrivateKeyJwt:
    return PrivateKeyJwt(key.private_pem, algorithm=key.algorithm, key_id=key.kid)


@pytest.mark.parametrize("use_async", [False, True], ids=["blocking", "async"])
@pytest.mark.parametrize(
    ("client_id", "auth"),
    [
        ("secret-app", SECRET),  # a plain secret: client_secret_basic
        ("secret-app", ClientSecretPost(SECRET)),
        ("rs-app", _jwt_auth(RSA_KEY)),
        ("es-app", _jwt_auth(EC_KEY)),
    ],
    ids=["client_secret_basic", "client_secret_post", "private_key_jwt-RS256",
         "private_key_jwt-ES256"],
)
async def test_each_client_auth_method_gets_a_token(
    idp: DevIssuerHandle, client_id: str, auth: str | ClientSecretPost | PrivateKeyJwt,
    use_async: bool,
) -> None:
    credential = ClientCredentials(_token_url(idp), client_id, auth, audience="piigate")
    # The issuer serves on this loop: the blocking call goes to a thread, as a sync caller's would.
    token = await (credential.token_async() if use_async else asyncio.to_thread(credential))
    assert _client_id_of(token) == client_id
    assert await credential.token_async() == token  # cached
    assert SECRET not in repr(credential)
    assert "PRIVATE" not in repr(credential)
    assert "PRIVATE" not in repr(auth)


async def test_each_private_key_jwt_request_sends_a_new_assertion(idp: DevIssuerHandle) -> None:
    now = [0.0]
    credential = ClientCredentials(_token_url(idp), "rs-app", _jwt_auth(RSA_KEY), "piigate",
                                   clock=lambda: now[0])
    first = await credential.token_async()
    now[0] += 86_400  # past the client token's lifetime: refetch, with a fresh jti
    second = await credential.token_async()
    assert _client_id_of(first) == _client_id_of(second) == "rs-app"


async def test_refusals_are_token_endpoint_errors(idp: DevIssuerHandle) -> None:
    cases = [
        ("secret-app", "wrong"),
        ("secret-app", ClientSecretPost("wrong")),
        ("es-app", _jwt_auth(OTHER_EC_KEY)),  # the kid is registered, the key is not
        ("rs-app", _jwt_auth(EC_KEY)),  # not this client's key
        ("rs-app", ClientSecretPost("anything")),  # a keys-only client has no secret
    ]
    for client_id, auth in cases:
        credential = ClientCredentials(_token_url(idp), client_id, auth, audience="piigate")
        with pytest.raises(TokenEndpointError) as caught:
            await credential.token_async()
        assert (caught.value.status, caught.value.error) == (401, "invalid_client"), client_id
    audience = ClientCredentials(_token_url(idp), "rs-app", _jwt_auth(RSA_KEY), "elsewhere")
    with pytest.raises(TokenEndpointError) as refused:
        await audience.token_async()
    assert refused.value.error == "invalid_target"


async def _post_assertion(idp: DevIssuerHandle, assertion: str) -> tuple[int, dict[str, str]]:
    form = {"grant_type": "client_credentials", "audience": "piigate",
            "client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    async with idp.http.post(_token_url(idp), data=form) as resp:
        return resp.status, await resp.json()


async def test_an_assertion_buys_one_token(idp: DevIssuerHandle) -> None:
    assertion = _jwt_auth(RSA_KEY).assertion("rs-app", _token_url(idp))
    assert (await _post_assertion(idp, assertion))[0] == 200
    status, body = await _post_assertion(idp, assertion)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "jti" in body["error_description"]
    assert assertion not in body["error_description"]


async def test_assertion_audience_and_lifetime_are_checked(idp: DevIssuerHandle) -> None:
    signer = _jwt_auth(RSA_KEY)
    wrong_audience = signer.assertion("rs-app", "http://127.0.0.1:1/oauth/token")
    status, body = await _post_assertion(idp, wrong_audience)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "InvalidAudienceError" in body["error_description"]

    now = int(time.time())
    key = jwt.PyJWK(RSA_KEY.public_jwk)  # only to read the alg; sign with the PEM below
    claims = {"iss": "rs-app", "sub": "rs-app", "aud": _token_url(idp), "jti": "j-1",
              "iat": now, "exp": now + 3600}
    too_long = jwt.encode(claims, RSA_KEY.private_pem, algorithm=key.algorithm_name,
                          headers={"kid": "rs-1"})
    status, body = await _post_assertion(idp, too_long)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "300 s ahead" in body["error_description"]
    mismatched = jwt.encode({**claims, "sub": "someone-else", "exp": now + 60},
                            RSA_KEY.private_pem, algorithm="RS256", headers={"kid": "rs-1"})
    assert (await _post_assertion(idp, mismatched))[0] == 401
