"""The app side of a SMART App Launch, as a SMART app does it: discovery at the FHIR
base, an authorization request with PKCE (S256), the redirect's code, the token request.

The redirect is not followed (the app would be the page it points to): its `Location`
holds the code and the `state`, which must come back unchanged (RFC 6749 §10.12).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp

from examples.smart_on_fhir.authz import SmartApp, s256


class LaunchFailed(Exception):
    """The authorization server refused: its OAuth `error`."""


@dataclass(frozen=True)
class Launched:
    """A token response: the access token, its scope and the `patient` in context."""

    access_token: str = field(repr=False)
    scope: str
    patient: str | None


async def launch(
    http: aiohttp.ClientSession, fhir_base: str, app: SmartApp, *, login_hint: str,
    scope: str, launch: str | None = None,
) -> Launched:
    """Run the authorization code flow for `app` as the dev user `login_hint`; pass the
    EHR's `launch` id for an EHR launch."""
    async with http.get(fhir_base + "/.well-known/smart-configuration") as response:
        response.raise_for_status()
        config: dict[str, Any] = await response.json()
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    query = {
        "response_type": "code", "client_id": app.client_id, "redirect_uri": app.redirect_uri,
        "scope": scope, "state": state, "aud": fhir_base, "code_challenge": s256(verifier),
        "code_challenge_method": "S256", "login_hint": login_hint,
        **({"launch": launch} if launch else {}),
    }
    authorize = config["authorization_endpoint"] + "?" + urlencode(query)
    async with http.get(authorize, allow_redirects=False) as response:
        if response.status != 302:
            raise LaunchFailed((await response.json()).get("error"))
        answer = parse_qs(urlsplit(response.headers["Location"]).query)
    if answer.get("state") != [state]:
        raise LaunchFailed("state does not match")
    form = {"grant_type": "authorization_code", "code": answer["code"][0],
            "redirect_uri": app.redirect_uri, "client_id": app.client_id,
            "code_verifier": verifier}
    async with http.post(config["token_endpoint"], data=form) as response:
        token: dict[str, Any] = await response.json()
        if response.status != 200:
            raise LaunchFailed(token.get("error"))
    return Launched(token["access_token"], token["scope"], token.get("patient"))


async def ehr_launch(http: aiohttp.ClientSession, authz_base: str, patient_id: str) -> str:
    """What the EHR does when a clinician opens the app from `patient_id`'s chart."""
    async with http.post(authz_base + "/dev/ehr/launch", json={"patient": patient_id}) as r:
        r.raise_for_status()
        return str((await r.json())["launch"])


async def read_patient(
    http: aiohttp.ClientSession, fhir_base: str, patient_id: str, token: str
) -> tuple[int, dict[str, Any]]:
    """`GET {fhir_base}/Patient/{id}` as the app: the status and the FHIR resource."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    async with http.get(f"{fhir_base}/Patient/{patient_id}", headers=headers) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body
