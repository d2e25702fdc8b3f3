"""The client-credentials grant (RFC 6749 §4.4): request parsing and the grant decision;
and the client authentication the introspection endpoint (RFC 7662 §2.1) shares with it.

Pure: parameters and the Authorization header in, a `Grant` or an `OAuthError` out. The
HTTP adapter (`api`) only decodes the body and renders the result.

Rules, with their source:

1. Parameters come form-encoded (§4.4.2) or, as Auth0 also accepts, as a JSON object of
   strings. A parameter sent twice is refused (§3.2).
2. The client authenticates with HTTP Basic (§2.3.1, id and secret form-urlencoded before
   base64: `client_secret_basic`), with `client_id`/`client_secret` parameters (§2.3.1:
   `client_secret_post`), or with a signed assertion in `client_assertion` whose
   `client_assertion_type` is RFC 7523's jwt-bearer (`private_key_jwt`, checked by
   `assertion`); never with two (§2.3).
3. An unknown client and a wrong secret give the same `invalid_client` (401, §5.2), and
   both do one constant-time digest comparison, so neither answer nor timing tells which.
   A client registered with public keys has no secret: it authenticates only by
   assertion, and a secret offered for it is `invalid_client` like any wrong secret.
4. `audience` is required and must be one the client may ask for: otherwise
   `invalid_target` (RFC 8707 §2, the error for a refused resource/audience).
5. Each requested scope must be allowed, else `invalid_scope` (§5.2). With no `scope`
   parameter the client gets every scope it is allowed (as Auth0 does).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from piigate_dev.devissuer.assertion import (
    JWT_BEARER,
    AssertionCheck,
    AssertionRejected,
    verify_client_assertion,
)
from piigate_dev.devissuer.config import SCOPE_TOKEN, ClientConfig, IssuerConfig

GRANT_TYPE = "client_credentials"
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
_PARAMETERS = frozenset({
    "grant_type", "client_id", "client_secret", "audience", "scope", "client_assertion_type",
    "client_assertion",
})  # fmt: skip
_INTROSPECTION_PARAMETERS = frozenset({
    "token", "token_type_hint", "client_id", "client_secret", "client_assertion_type",
    "client_assertion",
})  # fmt: skip
_NO_SUCH_CLIENT = hashlib.sha256(b"\x00no such client").digest()


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response; `description` never contains a secret or value."""

    def __init__(self, error: str, description: str, *, status: int = 400, basic: bool = False):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.basic_challenge = basic  # the client tried HTTP Basic: answer with a challenge

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.error, "error_description": self.description}


@dataclass(frozen=True)
class TokenRequest:
    """A parsed token request: the grant parameters and the client's credentials."""

    grant_type: str
    client_id: str
    client_secret: str
    audience: str | None
    scope: str | None
    used_basic: bool
    client_assertion: str | None = field(default=None, repr=False)  # private_key_jwt

    def __repr__(self) -> str:  # never show the secret
        return f"TokenRequest(client_id={self.client_id!r}, audience={self.audience!r})"


@dataclass(frozen=True)
class Grant:
    """What a client was granted: the token's subject client, audience and scope."""

    client_id: str
    audience: str
    scope: str


def parse_token_request(
    params: Iterable[tuple[str, object]], authorization: str | None
) -> TokenRequest:
    """Parse the body's parameters (in order, repeats included) and the Authorization header."""
    values = _values(params, _PARAMETERS)
    grant_type = values.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != GRANT_TYPE:
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    return _with_credentials(grant_type, values, authorization)


def parse_introspection_request(
    params: Iterable[tuple[str, object]], authorization: str | None
) -> tuple[str, TokenRequest]:
    """RFC 7662 §2.1: the token asked about and the calling client's credentials, given
    as for the token endpoint (rule 2); `token_type_hint` is accepted and not needed."""
    values = _values(params, _INTROSPECTION_PARAMETERS)
    token = values.pop("token", "")
    values.pop("token_type_hint", None)
    if not token:
        raise OAuthError("invalid_request", "token is required")
    return token, _with_credentials("", values, authorization)


def authenticate_client(
    request: TokenRequest, config: IssuerConfig, assertions: AssertionCheck
) -> ClientConfig:
    """The client a request authenticates (rule 3), with no grant: what the introspection
    endpoint requires of its callers (RFC 7662 §2.1)."""
    return _authenticate(request, config, assertions)


def _values(params: Iterable[tuple[str, object]], known: frozenset[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in params:
        if name not in known:
            continue  # §3.2: unrecognized parameters are ignored
        if name in values:
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        if not isinstance(value, str):
            raise OAuthError("invalid_request", f"parameter {name} must be a string")
        values[name] = value
    return values


def _with_credentials(
    grant_type: str, values: dict[str, str], authorization: str | None
) -> TokenRequest:
    used_basic = authorization is not None and authorization[:6].lower() == "basic "
    if "client_assertion" in values or "client_assertion_type" in values:
        return _assertion_request(grant_type, values, used_basic)
    if used_basic:
        assert authorization is not None
        if "client_secret" in values:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        client_id, client_secret = _basic_credentials(authorization[6:].strip())
        if "client_id" in values and values["client_id"] != client_id:
            raise OAuthError("invalid_request", "client_id differs from the Basic credentials")
    else:
        client_id = values.get("client_id", "")
        client_secret = values.get("client_secret", "")
        if not client_id or not client_secret:
            raise OAuthError("invalid_client", "client authentication failed", status=401)
    return TokenRequest(
        grant_type=grant_type,
        client_id=client_id,
        client_secret=client_secret,
        audience=values.get("audience") or None,
        scope=values.get("scope") or None,  # an empty scope is no scope (as Auth0 reads it)
        used_basic=used_basic,
    )


def _assertion_request(grant_type: str, values: dict[str, str], used_basic: bool) -> TokenRequest:
    if used_basic or "client_secret" in values:
        raise OAuthError("invalid_request", "use one client authentication method, not two")
    if values.get("client_assertion_type") != JWT_BEARER:
        raise OAuthError(
            "invalid_client", f"client_assertion_type must be {JWT_BEARER}", status=401
        )
    if not values.get("client_assertion"):
        raise OAuthError("invalid_request", "client_assertion is required with its type")
    return TokenRequest(
        grant_type=grant_type,
        client_id=values.get("client_id", ""),
        client_secret="",
        audience=values.get("audience") or None,
        scope=values.get("scope") or None,
        used_basic=False,
        client_assertion=values["client_assertion"],
    )


def authorize(
    request: TokenRequest, config: IssuerConfig, assertions: AssertionCheck | None = None
) -> Grant:
    """Authenticate the client and decide the grant; raise OAuthError. `assertions` is what
    a `private_key_jwt` assertion is checked against; without it assertions are refused."""
    client = _authenticate(request, config, assertions)
    if request.audience is None:
        raise OAuthError("invalid_request", "audience is required")
    if client.audiences is not None and request.audience not in client.audiences:
        raise OAuthError("invalid_target", "the client may not ask for this audience")
    if request.scope is None:
        scope = " ".join(sorted(client.scopes or ()))
    else:
        requested = request.scope.split(" ")
        if not all(SCOPE_TOKEN.fullmatch(s) for s in requested):
            raise OAuthError("invalid_scope", "scope is malformed (RFC 6749 §3.3)")
        if client.scopes is not None and not set(requested) <= client.scopes:
            raise OAuthError("invalid_scope", "the client may not ask for a requested scope")
        scope = " ".join(dict.fromkeys(requested))  # drop repeats, keep the order asked
    return Grant(client_id=client.client_id, audience=request.audience, scope=scope)


def _authenticate(
    request: TokenRequest, config: IssuerConfig, assertions: AssertionCheck | None
) -> ClientConfig:
    if request.client_assertion is not None:
        if assertions is None:
            raise OAuthError("invalid_client", "private_key_jwt is not accepted here", status=401)
        try:
            return verify_client_assertion(
                request.client_assertion, request.client_id or None, config, assertions
            )
        except AssertionRejected as exc:
            raise OAuthError("invalid_client", str(exc), status=401) from exc
    client = config.client(request.client_id)
    stored = client.secret_sha256 if client is not None else None
    offered = hashlib.sha256(request.client_secret.encode()).digest()
    # One comparison whatever the case; an unknown client and a keys-only client fail it.
    matched = hmac.compare_digest(offered, stored or _NO_SUCH_CLIENT)
    if client is None or stored is None or not matched:
        raise OAuthError(
            "invalid_client", "client authentication failed", status=401, basic=request.used_basic
        )
    return client


def _basic_credentials(encoded: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise OAuthError(
            "invalid_client", "malformed Basic credentials", status=401, basic=True
        ) from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id or not secret:
        raise OAuthError("invalid_client", "malformed Basic credentials", status=401, basic=True)
    # §2.3.1: both halves are application/x-www-form-urlencoded before base64.
    return unquote_plus(client_id), unquote_plus(secret)
