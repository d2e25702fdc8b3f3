"""The real dev issuer on 127.0.0.1:0: discovery, JWKS, client credentials, user tokens,
rotation. Tokens are verified with PyJWT against the JWKS fetched over HTTP, as the
gateway would verify them."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import aiohttp
import jwt
import pytest

from piigate_dev.devissuer.config import ClientConfig, IssuerConfig
from tests.support.devissuer import DevIssuerHandle, IssuerRefused, running_dev_issuer

PII_CLAIM = "https://example.com/pii_token"


async def verify(
    idp: DevIssuerHandle, token: str, audience: str, *, verify_exp: bool = True
) -> dict[str, Any]:
    """Verify like the gateway: keys from the fetched JWKS, fixed algorithms, iss and aud."""
    header = jwt.get_unverified_header(token)
    keys = jwt.PyJWKSet.from_dict(await idp.jwks())
    matching = [k for k in keys.keys if k.key_id == header["kid"]]
    if not matching:
        raise LookupError(f"kid {header['kid']} is not in the JWKS")
    key = matching[0]
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256", "EdDSA"],
        audience=audience,
        issuer=idp.issuer,
        options={"require": ["exp", "iat", "iss", "sub"], "verify_exp": verify_exp},
    )
    return claims


async def test_discovery_document() -> None:
    async with (
        running_dev_issuer() as idp,
        idp.http.get(idp.base_url + "/.well-known/openid-configuration") as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=300"
        document = await resp.json()
    assert idp.issuer == idp.base_url + "/"  # Auth0 style: trailing slash
    assert document["issuer"] == idp.issuer
    assert document["jwks_uri"] == idp.base_url + "/.well-known/jwks.json"
    assert document["token_endpoint"] == idp.base_url + "/oauth/token"
    assert document["grant_types_supported"] == ["client_credentials"]
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert document["token_endpoint_auth_signing_alg_values_supported"] == [
        "RS256", "RS384", "ES256", "ES384"]


async def test_jwks_endpoint_and_cache_control() -> None:
    async with (
        running_dev_issuer(IssuerConfig(jwks_max_age_s=42)) as idp,
        idp.http.get(idp.jwks_uri) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "public, max-age=42"
        assert resp.content_type == "application/json"
        jwks = await resp.json()
    (key,) = jwks["keys"]
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert key["kid"] == idp.signer.keys.current.kid
    assert "d" not in key


async def test_configured_issuer_is_used() -> None:
    config = IssuerConfig(issuer="https://auth.example.com/")
    async with running_dev_issuer(config) as idp:
        document = await idp.get_json("/.well-known/openid-configuration")
        token = await idp.client_token(audience="piigate")
    assert idp.issuer == document["issuer"] == "https://auth.example.com/"
    assert (
        jwt.decode(token, options={"verify_signature": False})["iss"] == "https://auth.example.com/"
    )


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_client_credentials_token_verifies(alg: str) -> None:
    async with running_dev_issuer(IssuerConfig(algorithm=alg)) as idp:
        token = await idp.client_token("dev-client", "dev-secret", "piigate", "pii:read")
        claims = await verify(idp, token, "piigate")
        header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": idp.signer.keys.current.kid, "typ": "at+jwt"}
    assert claims["sub"] == "dev-client@clients"
    assert claims["azp"] == claims["client_id"] == "dev-client"
    assert claims["gty"] == "client-credentials"
    assert claims["scope"] == "pii:read"
    assert claims["aud"] == "piigate"
    assert claims["exp"] - claims["iat"] == 86400
    assert claims["jti"]


SERVICE = IssuerConfig(
    clients=(
        ClientConfig(
            "orders",
            hashlib.sha256(b"orders-secret").digest(),
            audiences=frozenset({"piigate"}),
            scopes=frozenset({"pii:read"}),
        ),
    )
)


async def post_token(idp: DevIssuerHandle, **kw: Any) -> tuple[int, dict[str, Any], Any]:
    async with idp.http.post(idp.base_url + "/oauth/token", **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_token_response_shape_with_post_auth_and_json_body() -> None:
    async with running_dev_issuer(SERVICE) as idp:
        form = {
            "grant_type": "client_credentials",
            "client_id": "orders",
            "client_secret": "orders-secret",
            "audience": "piigate",
        }
        status, body, headers = await post_token(idp, data=form)
        assert status == 200
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert (body["token_type"], body["expires_in"], body["scope"]) == (
            "Bearer",
            86400,
            "pii:read",
        )
        assert headers["Cache-Control"] == "no-store"
        status, body, _ = await post_token(idp, json=form)  # Auth0 also takes JSON
        assert status == 200
        assert (await verify(idp, body["access_token"], "piigate"))["sub"] == "orders@clients"


ORDERS = ("orders", "orders-secret")


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        ({"audience": "piigate"}, ("orders", "wrong"), 401, "invalid_client"),
        ({"audience": "piigate"}, ("nobody", "orders-secret"), 401, "invalid_client"),
        ({"audience": "piigate", "grant_type": "password"}, ORDERS, 400, "unsupported_grant_type"),
        ({"audience": "elsewhere"}, ORDERS, 400, "invalid_target"),
        ({"audience": "piigate", "scope": "pii:write"}, ORDERS, 400, "invalid_scope"),
        ({}, ORDERS, 400, "invalid_request"),
    ],
)
async def test_client_credentials_errors(
    form: dict[str, str], auth: tuple[str, str], status: int, error: str
) -> None:
    async with running_dev_issuer(SERVICE) as idp:
        body = {"grant_type": "client_credentials", **form}
        basic = {"Authorization": aiohttp.encode_basic_auth(*auth)}
        got, answer, headers = await post_token(idp, data=body, headers=basic)
    assert (got, answer["error"]) == (status, error)
    assert "orders-secret" not in str(answer)
    if status == 401:  # RFC 6749 §5.2: a challenge after a failed Basic attempt
        assert headers["WWW-Authenticate"].startswith("Basic ")


async def test_unsupported_content_type_is_invalid_request() -> None:
    async with running_dev_issuer() as idp:
        status, answer, _ = await post_token(idp, data=b"x", headers={"Content-Type": "text/plain"})
    assert (status, answer["error"]) == (400, "invalid_request")


async def test_user_token_with_every_field() -> None:
    async with running_dev_issuer() as idp:
        token = await idp.user_token(
            sub="google-oauth2|100614615268183779229",
            pii_token="3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d",
            audience=["http://localhost:8080", "https://examplecom.us.auth0.com/userinfo"],
            scope="openid profile email",
            azp="jy9k2snrECCsGY6iDyTAOUFH9UEApycT",
            lifetime_s=600,
            claims={"permissions": ["read:api", "write:api"]},
        )
        claims = await verify(idp, token, "http://localhost:8080")
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    assert claims[PII_CLAIM] == "3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d"
    assert claims["sub"] == "google-oauth2|100614615268183779229"
    assert claims["aud"] == ["http://localhost:8080", "https://examplecom.us.auth0.com/userinfo"]
    assert claims["azp"] == "jy9k2snrECCsGY6iDyTAOUFH9UEApycT"
    assert claims["scope"] == "openid profile email"
    assert claims["permissions"] == ["read:api", "write:api"]
    assert claims["exp"] - claims["iat"] == 600
    assert claims["jti"]


async def test_user_token_typ_jwt_and_no_pii_claim() -> None:
    async with running_dev_issuer() as idp:
        token = await idp.user_token(sub="u1", audience="piigate", typ="JWT")
        claims = await verify(idp, token, "piigate")
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    assert PII_CLAIM not in claims


async def test_expired_user_token_via_iat_offset() -> None:
    async with running_dev_issuer() as idp:
        token = await idp.user_token(
            sub="u1", audience="piigate", lifetime_s=60, iat_offset_s=-3600
        )
        with pytest.raises(jwt.ExpiredSignatureError):
            await verify(idp, token, "piigate")


async def test_clock_is_injected() -> None:
    async with running_dev_issuer(clock=lambda: 1_600_000_000.0) as idp:
        token = await idp.user_token(sub="u1", audience="piigate")
        claims = await verify(idp, token, "piigate", verify_exp=False)
    assert (claims["iat"], claims["exp"]) == (1_600_000_000, 1_600_003_600)


async def test_user_token_request_errors() -> None:
    async with running_dev_issuer() as idp:
        with pytest.raises(IssuerRefused) as caught:
            await idp.user_token(sub="u1", claims={"iss": "https://evil/"})
        assert (caught.value.status, caught.value.error) == (400, "invalid_request")
        async with idp.http.post(idp.base_url + "/dev/users/token", data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "invalid_request"


async def test_rotation_then_retire() -> None:
    async with running_dev_issuer(IssuerConfig(algorithm="ES256")) as idp:
        before = await idp.user_token(sub="u1", audience="piigate")
        old_kid = jwt.get_unverified_header(before)["kid"]

        new_kid = await idp.rotate()
        assert new_kid != old_kid
        assert [k["kid"] for k in (await idp.jwks())["keys"]] == [old_kid, new_kid]
        await verify(idp, before, "piigate")  # still verifies: the old key is published
        after = await idp.user_token(sub="u1", audience="piigate")
        assert jwt.get_unverified_header(after)["kid"] == new_kid
        client = await idp.client_token(audience="piigate")
        assert jwt.get_unverified_header(client)["kid"] == new_kid

        assert await idp.retire() == [old_kid]
        assert [k["kid"] for k in (await idp.jwks())["keys"]] == [new_kid]
        with pytest.raises(LookupError):  # the old kid is gone from the JWKS
            await verify(idp, before, "piigate")
        await verify(idp, after, "piigate")


async def test_in_process_signer_matches_http_tokens() -> None:
    from piigate_dev.devissuer.claims import UserTokenRequest

    async with running_dev_issuer() as idp:
        token = idp.signer.sign_user_token(UserTokenRequest(sub="u1", pii_token="T", audience="a"))
        claims = await verify(idp, token, "a")
    assert (claims["iss"], claims[PII_CLAIM]) == (idp.issuer, "T")


async def test_basic_auth_header_is_decoded_per_rfc6749() -> None:
    async with running_dev_issuer() as idp:
        raw = base64.b64encode(b"dev-client:dev-secret").decode()
        form = {"grant_type": "client_credentials", "audience": "piigate"}
        status, _, _ = await post_token(idp, data=form, headers={"Authorization": f"Basic {raw}"})
    assert status == 200
