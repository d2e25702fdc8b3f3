"""A small FHIR R4 facade over piigate: `GET /Patient/{id}` answers a Patient whose
identifier (the internal user id) piigate disclosed for the patient in context.

The facade holds no personal data and decides nothing about access. It forwards the
app's access token to piigate as the subject token, names the Patient id it was asked
for (`patient`), and authenticates to piigate as itself (client credentials). piigate
verifies the token and decides:

- a patient-facing app (`patient/Patient.rs`, the patient's own login) is answered from
  the token's own vault-token claim (profile `token_claim`);
- a clinician app (`user/Patient.rs`, a practitioner's login with a `patient` launch
  context) is answered for the launch patient, found by the patient tag (profile
  `launch_patient`), never from the practitioner's own claim;
- either way, a Patient id other than the token's launch `patient` is refused
  (LAUNCH_PATIENT_MISMATCH), which the facade answers as 403 with an OperationOutcome.

A caller has one profile in piigate, so the facade is two callers, one per kind of app,
and picks one by the token's scope. It reads the scope from the token without verifying
it: that choice only routes, it grants nothing, since piigate verifies the token and each
profile refuses a token that is not of its kind (SCOPE_MISSING).

Also served: `GET /metadata` (the CapabilityStatement) and
`GET /.well-known/smart-configuration` (SMART App Launch §"Metadata"), at the FHIR base.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from examples.smart_on_fhir import resources
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PiigateError,
    ResourceExhausted,
    Unauthenticated,
)

FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}")  # FHIR R4 §2.24.0.1, the `id` type
USER_ID_FIELD = "user_id"
REASON = "AppFunctionality"


@dataclass(frozen=True)
class FacadeParts:
    """What the routes need: piigate as each kind of app's caller, and the metadata."""

    patient_access: AsyncDetokenizationClient  # piigate profile with token_claim
    clinical: AsyncDetokenizationClient  # piigate profile with launch_patient
    smart_configuration: Mapping[str, Any] = field(repr=False)
    capability: str = field(repr=False)  # the CapabilityStatement's JSON


class Facade:
    """The facade's state. It listens before its parts exist (its URL is the FHIR base
    that piigate's configuration names), so they are attached once piigate runs; until
    then every route answers 503."""

    def __init__(self) -> None:
        self._parts: FacadeParts | None = None

    def attach(self, parts: FacadeParts) -> None:
        """Set the parts (once)."""
        if self._parts is not None:
            raise RuntimeError("the facade's parts are attached already")
        self._parts = parts

    @property
    def parts(self) -> FacadeParts:
        if self._parts is None:
            raise web.HTTPServiceUnavailable()
        return self._parts


FACADE_KEY: web.AppKey[Facade] = web.AppKey("smart.facade", Facade)


def create_facade_app(facade: Facade) -> web.Application:
    """The aiohttp app serving the FHIR base at its root."""
    app = web.Application()
    app[FACADE_KEY] = facade
    app.router.add_get("/metadata", _metadata)
    app.router.add_get("/.well-known/smart-configuration", _smart_configuration)
    app.router.add_get("/Patient/{id}", _read_patient)
    return app


def grants_user_scopes(token: str) -> bool:
    """Whether the (unverified) token's scope has a SMART `user/` scope: routing only."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        scope = claims.get("scope", "") if isinstance(claims, dict) else ""
    except (IndexError, ValueError):
        return False
    return isinstance(scope, str) and any(s.startswith("user/") for s in scope.split())


async def _read_patient(request: web.Request) -> web.Response:
    facade = request.app[FACADE_KEY].parts
    patient_id = request.match_info["id"]
    if not FHIR_ID.fullmatch(patient_id):
        return _outcome(404, "not-found", "no such Patient")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _outcome(401, "login", "a SMART access token is required",
                        {"WWW-Authenticate": 'Bearer realm="fhir"'})
    client = facade.clinical if grants_user_scopes(token) else facade.patient_access
    try:
        found = await client.detokenize(token, fields=[USER_ID_FIELD], reason=REASON,
                                        patient=patient_id)
    except PiigateError as exc:
        return _refused(exc)
    if USER_ID_FIELD not in found or found[USER_ID_FIELD].disclosure != "raw":
        return _outcome(403, "forbidden", "the identifier is not disclosed to this app")
    body = resources.to_json(resources.patient(patient_id, found[USER_ID_FIELD].value))
    return web.Response(text=body, content_type=resources.FHIR_JSON)


def _refused(exc: PiigateError) -> web.Response:
    """piigate's refusal as FHIR: the reason and request id, never its metadata."""
    text = f"piigate: {exc.reason}" + (f" (request {exc.request_id})" if exc.request_id else "")
    if isinstance(exc, Unauthenticated):
        if exc.metadata.get("token_role") == "subject":
            return _outcome(401, "login", text,
                            {"WWW-Authenticate": 'Bearer realm="fhir", error="invalid_token"'})
        return _outcome(500, "exception", text)  # the facade's own credential: our fault
    if isinstance(exc, PermissionDenied | FailedPrecondition):
        return _outcome(403, "forbidden", text)
    if isinstance(exc, NotFound):
        return _outcome(404, "not-found", text)
    if isinstance(exc, InvalidArgument):
        return _outcome(400, "invalid", text)
    if isinstance(exc, ResourceExhausted):
        return _outcome(429, "throttled", text)
    return _outcome(503, "transient", text)


async def _metadata(request: web.Request) -> web.Response:
    return web.Response(text=request.app[FACADE_KEY].parts.capability,
                        content_type=resources.FHIR_JSON)


async def _smart_configuration(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[FACADE_KEY].parts.smart_configuration))


def _outcome(status: int, code: str, diagnostics: str,
             headers: Mapping[str, str] | None = None) -> web.Response:
    body = resources.to_json(resources.outcome(code, diagnostics))
    return web.Response(status=status, text=body, content_type=resources.FHIR_JSON,
                        headers=headers)
