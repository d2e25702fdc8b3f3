"""A development SMART App Launch authorization server, as a thin layer over the dev
issuer: its tokens are the dev issuer's (`iss`, keys, JWKS), so piigate verifies them as
it verifies any token from that issuer.

Routes (SMART App Launch 2.x, authorization code grant with PKCE, public clients):

    GET  /authorize        the app's authorization request; a development stand-in for
                           the login and consent pages: `login_hint` names the dev user,
                           who consents to what the app asked for
    POST /token            code + `code_verifier` -> access token, `patient` and `scope`
    POST /dev/ehr/launch   what an EHR does when a clinician opens the app from a
                           patient's chart: a `launch` id bound to that patient

and `smart_configuration(...)`, the `.well-known/smart-configuration` document the FHIR
server publishes at its base.

Launch context (SMART §"Launch context arrives with your access_token"): `patient` is in
the token response and, as many EHRs do, in the access token itself; `fhirUser` names the
user's own resource (`Practitioner/...` or `Patient/...`). A patient-facing app's token
also carries the user's vault token claim, as the identity provider's migration Action
puts it there; a practitioner's does not: their token is never about their own data.

Development only: no passwords, no consent screen, loopback callers only for the launch
route. Never run it anywhere else.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web

from piigate_dev.devissuer.claims import UserTokenRequest
from piigate_dev.devissuer.service import DevIssuer

CODE_LIFETIME_S = 60
TOKEN_LIFETIME_S = 300
Role = Literal["practitioner", "patient"]


@dataclass(frozen=True, slots=True)
class DevUser:
    """Someone who can log in here. A patient has a FHIR id of their own and the vault
    token their identity provider keeps for them."""

    username: str
    sub: str
    role: Role
    fhir_id: str
    pii_token: str | None = field(default=None, repr=False)

    @property
    def fhir_user(self) -> str:
        """The `fhirUser` value, relative to the FHIR base (SMART §"fhirUser")."""
        return f"{'Practitioner' if self.role == 'practitioner' else 'Patient'}/{self.fhir_id}"


@dataclass(frozen=True, slots=True)
class SmartApp:
    """A registered public client: where it may be redirected and the scopes it may get."""

    client_id: str
    redirect_uri: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    """Who and what this server knows. `fhir_base` is the only audience it issues for."""

    fhir_base: str
    users: tuple[DevUser, ...]
    apps: tuple[SmartApp, ...]


class AuthorizationRefused(Exception):
    """An OAuth error (RFC 6749 §4.1.2.1 / §5.2): its code; never a token or secret."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code stands for: who consented, for which app, to what, in what context."""

    user: DevUser
    app: SmartApp
    scopes: tuple[str, ...]
    patient: str | None
    code_challenge: str
    expires_at: float


def smart_configuration(issuer: str, jwks_uri: str, authz_base: str) -> dict[str, Any]:
    """`{fhir base}/.well-known/smart-configuration` (SMART App Launch §"Metadata")."""
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "authorization_endpoint": authz_base + "/authorize",
        "token_endpoint": authz_base + "/token",
        "grant_types_supported": ["authorization_code"],
        "token_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "fhirUser", "launch", "launch/patient",
                             "patient/Patient.rs", "user/Patient.rs"],
        "capabilities": ["launch-ehr", "launch-standalone", "client-public",
                         "context-ehr-patient", "context-standalone-patient",
                         "permission-patient", "permission-user", "permission-v2",
                         "sso-openid-connect"],
    }


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def decide(
    settings: AuthzSettings, query: Mapping[str, str], launches: Mapping[str, str], now: float,
) -> Grant:
    """The authorization request, checked (pure): the grant a code will stand for."""
    app = next((a for a in settings.apps if a.client_id == query.get("client_id")), None)
    if app is None or query.get("redirect_uri") != app.redirect_uri:
        raise AuthorizationRefused("invalid_client", "unknown client or redirect_uri")
    if query.get("response_type") != "code":
        raise AuthorizationRefused("unsupported_response_type", "only code")
    if query.get("aud") != settings.fhir_base:  # SMART: the FHIR server the app will call
        raise AuthorizationRefused("invalid_request", "aud is not this FHIR server")
    if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
        raise AuthorizationRefused("invalid_request", "PKCE S256 is required")
    user = next((u for u in settings.users if u.username == query.get("login_hint")), None)
    if user is None:
        raise AuthorizationRefused("access_denied", "login_hint names no dev user")
    asked = tuple(dict.fromkeys(query.get("scope", "").split()))
    scopes = tuple(s for s in asked if s in app.scopes and _fits(s, user.role))
    return Grant(user, app, scopes, _patient(user, scopes, query.get("launch"), launches),
                 query["code_challenge"], now + CODE_LIFETIME_S)


def _fits(scope: str, role: Role) -> bool:
    """A patient gets `patient/` scopes, a practitioner `user/` ones (and both the rest)."""
    if scope.startswith(("patient/", "launch/patient")):
        return role == "patient" or scope == "launch/patient"
    return not scope.startswith("user/") or role == "practitioner"


def _patient(user: DevUser, scopes: tuple[str, ...], launch: str | None,
             launches: Mapping[str, str]) -> str | None:
    if "launch" in scopes:  # EHR launch: the chart the clinician has open
        patient = launches.get(launch or "")
        if patient is None:
            raise AuthorizationRefused("invalid_request", "unknown launch")
        return patient
    if "launch/patient" in scopes:  # standalone: a patient is in their own context
        if user.role != "patient":
            raise AuthorizationRefused("invalid_request", "a practitioner launches from "
                                       "the EHR (scope launch), with a patient open")
        return user.fhir_id
    return None


class AuthorizationServer:
    """The routes' state: launches, one-time codes, and the dev issuer that signs."""

    def __init__(self, settings: AuthzSettings, issuer: DevIssuer,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._issuer = issuer
        self._clock = clock
        self._launches: dict[str, str] = {}
        self._codes: dict[str, Grant] = {}

    def launch(self, patient_id: str) -> str:
        """A launch id for an EHR launch with `patient_id` open."""
        launch = secrets.token_urlsafe(12)
        self._launches[launch] = patient_id
        return launch

    def authorize(self, query: Mapping[str, str]) -> str:
        """A one-time code for the checked request."""
        grant = decide(self.settings, query, self._launches, self._clock())
        code = secrets.token_urlsafe(24)
        self._codes[code] = grant
        return code

    def token(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token response for a code (RFC 6749 §4.1.3, PKCE RFC 7636 §4.6)."""
        if form.get("grant_type") != "authorization_code":
            raise AuthorizationRefused("unsupported_grant_type", "only authorization_code")
        grant = self._codes.pop(form.get("code", ""), None)  # one use, whatever follows
        if grant is None or grant.expires_at < self._clock():
            raise AuthorizationRefused("invalid_grant", "unknown, used or expired code")
        if (form.get("client_id") != grant.app.client_id
                or form.get("redirect_uri") != grant.app.redirect_uri):
            raise AuthorizationRefused("invalid_grant", "the code was issued to another client")
        if not secrets.compare_digest(s256(form.get("code_verifier", "")), grant.code_challenge):
            raise AuthorizationRefused("invalid_grant", "code_verifier does not match")
        claims: dict[str, Any] = {"fhirUser": grant.user.fhir_user}
        if grant.patient is not None:
            claims["patient"] = grant.patient
        scope = " ".join(grant.scopes)
        token = self._issuer.sign_user_token(UserTokenRequest(
            sub=grant.user.sub, audience=self.settings.fhir_base, scope=scope,
            azp=grant.app.client_id, lifetime_s=TOKEN_LIFETIME_S, claims=claims,
            pii_token=grant.user.pii_token if grant.user.role == "patient" else None,
        ))
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                  "expires_in": TOKEN_LIFETIME_S, "scope": scope}
        if grant.patient is not None:
            answer["patient"] = grant.patient
        return answer


SERVER_KEY: web.AppKey[AuthorizationServer] = web.AppKey("smart.authz", AuthorizationServer)


def create_authz_app(server: AuthorizationServer) -> web.Application:
    """The aiohttp app for `server`."""
    app = web.Application()
    app[SERVER_KEY] = server
    app.router.add_get("/authorize", _authorize)
    app.router.add_post("/token", _token)
    app.router.add_post("/dev/ehr/launch", _launch)
    return app


async def _authorize(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    query = dict(request.query)
    try:
        code = server.authorize(query)
    except AuthorizationRefused as exc:
        return _error(exc, 400)
    location = query["redirect_uri"] + "?" + urlencode(
        {"code": code, **({"state": query["state"]} if "state" in query else {})})
    raise web.HTTPFound(location)


async def _token(request: web.Request) -> web.Response:
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    try:
        answer = request.app[SERVER_KEY].token(form)
    except AuthorizationRefused as exc:
        return _error(exc, 400)
    return web.json_response(answer, headers={"Cache-Control": "no-store"})


async def _launch(request: web.Request) -> web.Response:
    if request.remote not in ("127.0.0.1", "::1"):
        return _error(AuthorizationRefused("access_denied", "loopback only"), 403)
    body = await request.json()
    patient = body.get("patient") if isinstance(body, dict) else None
    if not isinstance(patient, str) or not patient:
        return _error(AuthorizationRefused("invalid_request", "patient is required"), 400)
    return web.json_response({"launch": request.app[SERVER_KEY].launch(patient)})


def _error(exc: AuthorizationRefused, status: int) -> web.Response:
    return web.json_response({"error": exc.error, "error_description": exc.description},
                             status=status, headers={"Cache-Control": "no-store"})
