"""The dev issuer's HTTP surface (aiohttp) and the in-process factory `create_issuer_app`.

    GET  /.well-known/openid-configuration   discovery (OIDC Discovery / RFC 8414 shape)
    GET  /.well-known/jwks.json              public keys, `Cache-Control: public, max-age=N`
    POST /oauth/token                        client credentials (RFC 6749 §4.4): Basic,
                                             post or private_key_jwt client auth
    POST /introspect                         token introspection (RFC 7662) of opaque
                                             tokens, the same client auth
    POST /dev/users/token                    an end user's access token (simulated login;
                                             `"token_format": "opaque"` for an opaque one)
    POST /dev/tokens/revoke                  revoke an opaque token (`{"token": ...}`)
    POST /dev/keys/rotate                    add a key and sign with it; old keys stay published
    POST /dev/keys/retire                    stop publishing every non-current key

The `/dev/*` routes hand out tokens for any subject and change the keys, so they answer
only loopback peers unless the app is built with `allow_remote=True` (defence in depth
behind the CLI's refusal to listen on a non-loopback address).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from piigate import strictjson
from piigate.transport.addresses import is_loopback_host
from piigate_dev.devissuer.assertion import ALGORITHMS as ASSERTION_ALGORITHMS
from piigate_dev.devissuer.assertion import AssertionCheck, AssertionReplay
from piigate_dev.devissuer.claims import RequestRejected, parse_user_token_request
from piigate_dev.devissuer.config import IssuerConfig
from piigate_dev.devissuer.keys import KeyRing, generate_signing_key
from piigate_dev.devissuer.oauth import (
    AUTH_METHODS,
    GRANT_TYPE,
    OAuthError,
    authenticate_client,
    authorize,
    parse_introspection_request,
    parse_token_request,
)
from piigate_dev.devissuer.service import Clock, DevIssuer

ISSUER_KEY: web.AppKey[DevIssuer] = web.AppKey("piigate_dev.devissuer.issuer", DevIssuer)
# private_key_jwt: the assertion ids seen, so each assertion buys one token (RFC 7523 §3).
REPLAY_KEY: web.AppKey[AssertionReplay] = web.AppKey(
    "piigate_dev.devissuer.assertion_replay", AssertionReplay
)
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a password
USER_TOKEN_PATH = "/dev/users/token"  # noqa: S105 - a path
INTROSPECTION_PATH = "/introspect"
REVOKE_PATH = "/dev/tokens/revoke"
MAX_BODY_BYTES = 64 * 1024

# RFC 6749 §5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def create_issuer_app(
    config: IssuerConfig | None = None,
    clock: Clock = time.time,
    *,
    allow_remote: bool = False,
) -> web.Application:
    """Build the issuer app with fresh keys; its signer is `app[ISSUER_KEY]`."""
    config = config if config is not None else IssuerConfig()
    # RSA key generation takes tens of milliseconds: keep it off the event loop.
    first = await asyncio.to_thread(generate_signing_key, config.algorithm)
    issuer = DevIssuer(config, KeyRing(config.algorithm, first=first), clock)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[ISSUER_KEY] = issuer
    app[REPLAY_KEY] = AssertionReplay()
    app.router.add_get(DISCOVERY_PATH, _discovery)
    app.router.add_get(JWKS_PATH, _jwks)
    app.router.add_post(TOKEN_PATH, _client_token)
    app.router.add_post(INTROSPECTION_PATH, _introspect)
    app.router.add_post(REVOKE_PATH, _loopback_only(_revoke, allow_remote))
    app.router.add_post(USER_TOKEN_PATH, _loopback_only(_user_token, allow_remote))
    app.router.add_post("/dev/keys/rotate", _loopback_only(_rotate, allow_remote))
    app.router.add_post("/dev/keys/retire", _loopback_only(_retire, allow_remote))
    return app


def discovery_document(issuer: str, origin: str, algorithms: list[str]) -> dict[str, Any]:
    """The discovery document. Endpoints use the origin the caller reached us at."""
    return {
        "issuer": issuer,
        "jwks_uri": origin + JWKS_PATH,
        "token_endpoint": origin + TOKEN_PATH,
        "grant_types_supported": [GRANT_TYPE],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "response_types_supported": [],  # no authorization endpoint: logins are simulated
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "claims_supported": ["iss", "sub", "aud", "azp", "scope", "iat", "exp", "jti"],
        "introspection_endpoint": origin + INTROSPECTION_PATH,
        "introspection_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "dev_user_token_endpoint": origin + USER_TOKEN_PATH,
        "dev_token_revocation_endpoint": origin + REVOKE_PATH,
    }


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _loopback_only(handler: Handler, allow_remote: bool) -> Handler:
    """Wrap a `/dev/*` handler (the handler, not a path prefix, so no URL spelling evades it)."""
    if allow_remote:
        return handler

    async def guarded(request: web.Request) -> web.Response:
        if not is_loopback_host(request.remote or ""):
            refusal = OAuthError("access_denied", "dev routes answer loopback only", status=403)
            return _oauth_error(refusal)
        return await handler(request)

    return guarded


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


async def _discovery(request: web.Request) -> web.Response:
    issuer = request.app[ISSUER_KEY]
    document = discovery_document(
        issuer.issuer_for(_origin(request)), _origin(request), [issuer.keys.alg]
    )
    return web.json_response(document, headers=_public_cache(issuer))


async def _jwks(request: web.Request) -> web.Response:
    issuer = request.app[ISSUER_KEY]
    return web.json_response(issuer.keys.jwks(), headers=_public_cache(issuer))


async def _client_token(request: web.Request) -> web.Response:
    issuer = request.app[ISSUER_KEY]
    try:
        params = await _token_parameters(request)
        token_request = parse_token_request(params, request.headers.get("Authorization"))
        origin = _origin(request)
        # RFC 7523 §3: the assertion's audience is this token endpoint (or the issuer).
        assertions = AssertionCheck(
            audiences=frozenset({origin + TOKEN_PATH, issuer.issuer_for(origin)}),
            now=issuer.clock(),
            replay=request.app[REPLAY_KEY],
        )
        grant = authorize(token_request, issuer.config, assertions)
    except OAuthError as exc:
        return _oauth_error(exc)
    client = issuer.config.client(grant.client_id)
    issue = (issuer.opaque_client_token if client is not None and client.opaque_tokens
             else issuer.sign_client_token)
    token, lifetime = issue(grant, issuer.issuer_for(_origin(request)))
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": grant.scope,
    }
    return web.json_response(body, headers=_NO_STORE)


async def _user_token(request: web.Request) -> web.Response:
    issuer = request.app[ISSUER_KEY]
    try:
        body = await _json_body(request)
        kind = body.pop("token_format", "jwt") if isinstance(body, dict) else "jwt"
        if kind not in ("jwt", "opaque"):
            raise RequestRejected("token_format must be 'jwt' or 'opaque'")
        user_request = parse_user_token_request(body, issuer.config.max_token_lifetime_s)
    except RequestRejected as exc:
        return _oauth_error(OAuthError("invalid_request", str(exc)))
    except OAuthError as exc:
        return _oauth_error(exc)
    parts = issuer.user_token_parts(user_request, issuer.issuer_for(_origin(request)))
    token = (issuer.opaque.issue(parts.claims, issuer.clock()) if kind == "opaque"
             else issuer.keys.current.sign(parts.claims, parts.header))
    answer: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": parts.claims["exp"] - parts.claims["iat"],
    }
    if user_request.scope is not None:
        answer["scope"] = user_request.scope
    return web.json_response(answer, headers=_NO_STORE)


async def _introspect(request: web.Request) -> web.Response:
    """RFC 7662 §2: the caller authenticates as a client; any client may ask. Unknown,
    expired and revoked tokens (and this issuer's JWTs, which it does not keep) answer
    `{"active": false}`."""
    issuer = request.app[ISSUER_KEY]
    try:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
        form = await request.post()
        token, credentials = parse_introspection_request(
            list(form.items()), request.headers.get("Authorization")
        )
        origin = _origin(request)
        # RFC 7523 §3: an assertion's audience names this server; this endpoint's URL,
        # the token endpoint's or the issuer identifier.
        assertions = AssertionCheck(
            audiences=frozenset({origin + INTROSPECTION_PATH, origin + TOKEN_PATH,
                                 issuer.issuer_for(origin)}),
            now=issuer.clock(),
            replay=request.app[REPLAY_KEY],
        )
        authenticate_client(credentials, issuer.config, assertions)
    except OAuthError as exc:
        return _oauth_error(exc)
    return web.json_response(issuer.opaque.introspect(token, issuer.clock()), headers=_NO_STORE)


async def _revoke(request: web.Request) -> web.Response:
    try:
        body = await _json_body(request)
    except OAuthError as exc:
        return _oauth_error(exc)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        return _oauth_error(OAuthError("invalid_request", "token must be a non-empty string"))
    return web.json_response({"revoked": request.app[ISSUER_KEY].revoke(token)})


async def _rotate(request: web.Request) -> web.Response:
    keys = request.app[ISSUER_KEY].keys
    key = keys.rotate(await asyncio.to_thread(generate_signing_key, keys.alg))
    return web.json_response({"kid": key.kid, "kids": keys.kids})


async def _retire(request: web.Request) -> web.Response:
    keys = request.app[ISSUER_KEY].keys
    retired = keys.retire()
    return web.json_response({"kid": keys.current.kid, "retired": retired, "kids": keys.kids})


async def _token_parameters(request: web.Request) -> list[tuple[str, object]]:
    """The token request's parameters in order, repeats kept (form or JSON body)."""
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return list(form.items())
    if request.content_type == "application/json":
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise OAuthError("invalid_request", "the JSON body must be an object")
        return list(body.items())
    raise OAuthError(
        "invalid_request", "send application/x-www-form-urlencoded or application/json"
    )


async def _json_body(request: web.Request) -> object:
    try:
        return await request.json(loads=strictjson.loads)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OAuthError("invalid_request", "the body is not valid JSON") from exc


def _public_cache(issuer: DevIssuer) -> dict[str, str]:
    return {"Cache-Control": f"public, max-age={issuer.config.jwks_max_age_s}"}


def _oauth_error(exc: OAuthError) -> web.Response:
    headers = dict(_NO_STORE)
    if exc.basic_challenge:  # RFC 6749 §5.2: a 401 after Basic auth carries a challenge
        headers["WWW-Authenticate"] = 'Basic realm="piigate-dev-issuer"'
    return web.json_response(exc.body(), status=exc.status, headers=headers)
