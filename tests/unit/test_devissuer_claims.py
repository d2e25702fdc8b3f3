"""Pure token building: every claim, the typ header, aud shapes, the opaque pii claim name."""

from __future__ import annotations

import pytest

from piigate_dev.devissuer.claims import (
    MAX_OFFSET_S,
    RequestRejected,
    UserTokenRequest,
    build_client_token,
    build_user_token,
    parse_user_token_request,
)

NOW = 1_700_000_000.75
ISS = "http://127.0.0.1:9000/"
PII_CLAIM = "https://example.com/pii_token"


def user(request: UserTokenRequest, pii_claim: str = PII_CLAIM) -> dict[str, object]:
    parts = build_user_token(
        request,
        issuer=ISS,
        pii_claim=pii_claim,
        default_lifetime_s=3600,
        now=NOW,
        jti="jti-1",
        kid="kid-1",
        alg="ES256",
    )
    return {"header": parts.header, "claims": parts.claims}


def test_user_token_carries_every_field() -> None:
    token = user(
        UserTokenRequest(
            sub="google-oauth2|1006",
            pii_token="3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d",
            audience=("http://localhost:8080", "https://examplecom.us.auth0.com/userinfo"),
            scope="openid profile email",
            azp="jy9k2snr",
            lifetime_s=600,
            claims={"permissions": ["read:api"]},
        )
    )
    assert token["header"] == {"typ": "at+jwt", "alg": "ES256", "kid": "kid-1"}
    assert token["claims"] == {
        PII_CLAIM: "3e84e552-4d6d-43cb-a21e-0ae5b8ffb54d",
        "iss": ISS,
        "sub": "google-oauth2|1006",
        "aud": ["http://localhost:8080", "https://examplecom.us.auth0.com/userinfo"],
        "iat": 1_700_000_000,  # whole seconds, from the clock passed in
        "exp": 1_700_000_600,
        "jti": "jti-1",
        "azp": "jy9k2snr",
        "scope": "openid profile email",
        "permissions": ["read:api"],
    }


def test_minimal_user_token_leaves_optional_claims_out() -> None:
    claims = user(UserTokenRequest(sub="u1"))["claims"]
    assert claims == {
        "iss": ISS,
        "sub": "u1",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
        "jti": "jti-1",
    }


def test_typ_jwt_on_request() -> None:
    assert user(UserTokenRequest(sub="u1", typ="JWT"))["header"]["typ"] == "JWT"  # type: ignore[index]


def test_aud_string_stays_string_and_list_stays_list() -> None:
    assert user(UserTokenRequest(sub="u", audience="piigate"))["claims"]["aud"] == "piigate"  # type: ignore[index]
    one = user(UserTokenRequest(sub="u", audience=("piigate",)))["claims"]
    assert one["aud"] == ["piigate"]  # type: ignore[index]


def test_pii_claim_name_is_one_opaque_key() -> None:
    name = "https://example.com/a.b/pii_token"
    claims = user(UserTokenRequest(sub="u", pii_token="T"), pii_claim=name)["claims"]
    assert isinstance(claims, dict)
    assert claims[name] == "T"
    assert "https://example" not in claims  # not split on dots or slashes
    assert "https://example.com/a" not in claims


def test_iat_offset_moves_iat_and_exp() -> None:
    claims = user(UserTokenRequest(sub="u", lifetime_s=60, iat_offset_s=-7200))["claims"]
    assert claims["iat"] == 1_700_000_000 - 7200  # type: ignore[index]
    assert claims["exp"] == 1_700_000_000 - 7200 + 60  # type: ignore[index]


def test_client_token_is_auth0_m2m_shaped() -> None:
    parts = build_client_token(
        issuer=ISS,
        client_id="svc",
        audience="piigate",
        scope="pii:read",
        lifetime_s=86400,
        now=NOW,
        jti="j",
        kid="k",
        alg="RS256",
    )
    assert parts.header == {"typ": "at+jwt", "alg": "RS256", "kid": "k"}
    assert parts.claims == {
        "iss": ISS,
        "sub": "svc@clients",
        "aud": "piigate",
        "azp": "svc",
        "client_id": "svc",
        "gty": "client-credentials",
        "scope": "pii:read",
        "iat": 1_700_000_000,
        "exp": 1_700_086_400,
        "jti": "j",
    }


def test_request_json_round_trips() -> None:
    request = UserTokenRequest(
        sub="u",
        pii_token="t",
        audience=("a", "b"),
        scope="s",
        azp="z",
        lifetime_s=5,
        typ="JWT",
        claims={"x": 1},
        iat_offset_s=-3,
    )
    assert parse_user_token_request(request.to_json(), max_lifetime_s=10) == request


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({}, "sub must be"),
        ({"sub": ""}, "sub must be"),
        ({"sub": "u", "pii-token": "t"}, "unknown field(s): pii-token"),
        ({"sub": "u", "audience": []}, "audience must be"),
        ({"sub": "u", "audience": ["a", 1]}, "audience must be"),
        ({"sub": "u", "audience": 5}, "audience must be"),
        ({"sub": "u", "pii_token": 5}, "pii_token must be a string"),
        ({"sub": "u", "lifetime_s": 0}, "lifetime_s must be"),
        ({"sub": "u", "lifetime_s": 11}, "lifetime_s must be an integer from 1 to 10"),
        ({"sub": "u", "lifetime_s": True}, "lifetime_s must be"),
        ({"sub": "u", "iat_offset_s": 1.5}, "iat_offset_s must be"),
        ({"sub": "u", "iat_offset_s": MAX_OFFSET_S + 1}, "iat_offset_s must be"),
        ({"sub": "u", "typ": "id+jwt"}, "typ must be"),
        ({"sub": "u", "claims": []}, "claims must be"),
        ({"sub": "u", "claims": {"iss": "x", "exp": 1}}, "claims may not set exp, iss"),
    ],
)
def test_request_validation_names_the_field(body: object, message: str) -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_user_token_request(body, max_lifetime_s=10)
    assert message in str(caught.value)


def test_request_validation_never_echoes_values() -> None:
    with pytest.raises(RequestRejected) as caught:
        parse_user_token_request({"sub": "u", "pii_token": ["secret-value"]}, max_lifetime_s=10)
    assert "secret-value" not in str(caught.value)


def test_extra_claims_may_set_the_pii_claim_when_pii_token_is_absent() -> None:
    claims = user(UserTokenRequest(sub="u", claims={PII_CLAIM: 42}))["claims"]
    assert claims[PII_CLAIM] == 42  # type: ignore[index]
    claims = user(UserTokenRequest(sub="u", pii_token="T", claims={PII_CLAIM: 42}))["claims"]
    assert claims[PII_CLAIM] == "T"  # type: ignore[index]
