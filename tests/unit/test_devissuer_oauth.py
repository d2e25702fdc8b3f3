"""Client credentials without a server: parameter parsing, client auth and the grant decision."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

import pytest

from piigate_dev.devissuer.config import ClientConfig, IssuerConfig
from piigate_dev.devissuer.oauth import Grant, OAuthError, authorize, parse_token_request

CONFIG = IssuerConfig(
    clients=(
        ClientConfig(
            "orders",
            hashlib.sha256(b"s3cret").digest(),
            audiences=frozenset({"piigate"}),
            scopes=frozenset({"pii:read", "pii:read:raw"}),
        ),
    )
)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def grant(params: dict[str, str], authorization: str | None = None) -> Grant:
    return authorize(parse_token_request(params.items(), authorization), CONFIG)


def error(
    params: dict[str, str] | Sequence[tuple[str, object]], authorization: str | None = None
) -> OAuthError:
    items = params.items() if isinstance(params, dict) else params
    with pytest.raises(OAuthError) as caught:
        authorize(parse_token_request(items, authorization), CONFIG)
    return caught.value


FORM = {"grant_type": "client_credentials", "audience": "piigate"}


def test_basic_auth_grants_every_allowed_scope_when_none_asked() -> None:
    assert grant(FORM, basic("orders", "s3cret")) == Grant(
        "orders", "piigate", "pii:read pii:read:raw"
    )


def test_post_auth_and_requested_scope() -> None:
    params = {
        **FORM,
        "client_id": "orders",
        "client_secret": "s3cret",
        "scope": "pii:read pii:read",
    }
    assert grant(params) == Grant("orders", "piigate", "pii:read")


def test_basic_credentials_are_form_urlencoded() -> None:
    # RFC 6749 §2.3.1: "a b" is sent as "a+b", ":" as "%3A".
    config = IssuerConfig(
        clients=(ClientConfig("my:client", hashlib.sha256(b"p w").digest(), None, None),)
    )
    request = parse_token_request(FORM.items(), basic("my%3Aclient", "p+w"))
    assert authorize(request, config).client_id == "my:client"


@pytest.mark.parametrize(
    ("params", "auth"),
    [
        ({**FORM, "client_id": "orders", "client_secret": "wrong"}, None),
        ({**FORM, "client_id": "nobody", "client_secret": "s3cret"}, None),
        (FORM, basic("orders", "wrong")),
        (FORM, None),
        (FORM, "Basic !!!"),
    ],
)
def test_client_authentication_failures_are_one_invalid_client(
    params: dict[str, str], auth: str | None
) -> None:
    failure = error(params, auth)
    assert (failure.error, failure.status) == ("invalid_client", 401)
    assert failure.description in ("client authentication failed", "malformed Basic credentials")
    assert failure.basic_challenge == (auth is not None)


def test_grant_type_errors() -> None:
    assert error({"audience": "piigate"}).error == "invalid_request"
    failure = error({**FORM, "grant_type": "password"}, basic("orders", "s3cret"))
    assert (failure.error, failure.status) == ("unsupported_grant_type", 400)


def test_two_auth_methods_and_repeats_are_invalid_requests() -> None:
    both = {**FORM, "client_secret": "s3cret"}
    assert error(both, basic("orders", "s3cret")).error == "invalid_request"
    repeated = [*FORM.items(), ("audience", "piigate")]
    assert (
        error(repeated, basic("orders", "s3cret")).description == "parameter audience is repeated"
    )
    assert (
        error([*FORM.items(), ("scope", 5)], basic("orders", "s3cret")).error == "invalid_request"
    )


def test_audience_required_and_checked() -> None:
    auth = basic("orders", "s3cret")
    assert error({"grant_type": "client_credentials"}, auth).error == "invalid_request"
    failure = error({**FORM, "audience": "elsewhere"}, auth)
    assert (failure.error, failure.status) == ("invalid_target", 400)


def test_scope_checked() -> None:
    auth = basic("orders", "s3cret")
    assert error({**FORM, "scope": "pii:read admin"}, auth).error == "invalid_scope"
    assert error({**FORM, "scope": 'pii:read  "x'}, auth).error == "invalid_scope"


def test_errors_never_echo_the_secret() -> None:
    failure = error({**FORM, "client_id": "orders", "client_secret": "guess-123"})
    assert "guess-123" not in str(failure.body())
    request = parse_token_request(
        {**FORM, "client_id": "o", "client_secret": "guess-123"}.items(), None
    )
    assert "guess-123" not in repr(request)
