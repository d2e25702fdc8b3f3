"""examples/smart_on_fhir end to end: SMART launches at the development authorization
server, FHIR reads at the facade, piigate deciding each one through the real gateway.

A patient-facing app gets its own patient's identifier and nothing else; a clinician app
gets the launch patient's, never the practitioner's; a Patient id other than the launch
patient is refused with a 403 OperationOutcome, built with fhir.resources as every answer."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

from examples.smart_on_fhir.__main__ import USER_IDS, main
from examples.smart_on_fhir.resources import USER_ID_SYSTEM
from examples.smart_on_fhir.smart_app import (
    Launched,
    LaunchFailed,
    ehr_launch,
    launch,
    read_patient,
)
from examples.smart_on_fhir.stack import (
    CLINICIAN_APP,
    PATIENT_PORTAL,
    PRACTITIONER,
    SmartStack,
    running_smart_stack,
)

PORTAL_SCOPE = "openid fhirUser launch/patient patient/Patient.rs"
CLINICIAN_SCOPE = "openid fhirUser launch user/Patient.rs"


def test_the_one_command_walks_through_both_apps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert f"GET /Patient/pat-alice -> 200 Patient/pat-alice, identifier {USER_IDS['alice']}" in out
    assert f"GET /Patient/pat-bob -> 200 Patient/pat-bob, identifier {USER_IDS['bob']}" in out
    assert out.count("-> 403 OperationOutcome: piigate: LAUNCH_PATIENT_MISMATCH") == 2
    assert "every answer as the profiles promise" in out


async def test_a_patient_app_reads_its_own_patient_only() -> None:
    async with running_smart_stack() as stack, ClientSession() as http:
        portal = await launch(http, stack.fhir_base, PATIENT_PORTAL, login_hint="alice",
                              scope=PORTAL_SCOPE + " user/Patient.rs")
        assert portal.patient == "pat-alice"
        assert "user/Patient.rs" not in portal.scope.split()  # a patient gets patient/ only
        status, body = await read_patient(http, stack.fhir_base, "pat-alice",
                                          portal.access_token)
        assert status == 200
        patient = Patient.model_validate(body)
        assert patient.id == "pat-alice"
        (identifier,) = patient.identifier or []
        assert (identifier.system, identifier.value) == (USER_ID_SYSTEM, USER_IDS["alice"])
        await _refused(http, stack, portal, "pat-bob", 403, "forbidden",
                       "LAUNCH_PATIENT_MISMATCH")
        assert [e["profile"] for e in stack.audit_events()] == ["patient_access"] * 2


async def test_a_clinician_app_reads_the_launch_patient_never_the_holder() -> None:
    async with running_smart_stack() as stack, ClientSession() as http:
        launch_id = await ehr_launch(http, stack.authz_base, "pat-carol")
        clinician = await launch(http, stack.fhir_base, CLINICIAN_APP,
                                 login_hint=PRACTITIONER.username, scope=CLINICIAN_SCOPE,
                                 launch=launch_id)
        assert clinician.patient == "pat-carol"
        status, body = await read_patient(http, stack.fhir_base, "pat-carol",
                                          clinician.access_token)
        assert status == 200
        (identifier,) = Patient.model_validate(body).identifier or []
        assert identifier.value == USER_IDS["carol"]
        await _refused(http, stack, clinician, "pat-alice", 403, "forbidden",
                       "LAUNCH_PATIENT_MISMATCH")
        events = stack.audit_events()
        assert [(e["profile"], e["outcome"]) for e in events] == [
            ("clinical", "allowed"), ("clinical", "denied")]
        # An EHR launch needs the EHR's launch id; without a launch there is no patient
        # in context, and piigate discloses nothing (never the practitioner's own data).
        with pytest.raises(LaunchFailed, match="invalid_request"):
            await launch(http, stack.fhir_base, CLINICIAN_APP, login_hint=PRACTITIONER.username,
                         scope=CLINICIAN_SCOPE, launch="made-up")
        contextless = await launch(http, stack.fhir_base, CLINICIAN_APP,
                                   login_hint=PRACTITIONER.username, scope="openid user/Patient.rs")
        assert contextless.patient is None
        await _refused(http, stack, contextless, "pat-carol", 403, "forbidden",
                       "LAUNCH_CONTEXT_MISSING")


async def test_no_or_bad_token_is_401_and_the_metadata_is_served() -> None:
    async with running_smart_stack() as stack, ClientSession() as http:
        async with http.get(stack.fhir_base + "/Patient/pat-alice") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            outcome = OperationOutcome.model_validate(await response.json(content_type=None))
            assert outcome.issue[0].code == "login"
        forged = Launched("e30.e30.", "patient/Patient.rs", None)
        await _refused(http, stack, forged, "pat-alice", 401, "login", "TOKEN_")
        async with http.get(stack.fhir_base + "/metadata") as response:
            statement = CapabilityStatement.model_validate(await response.json(content_type=None))
        assert statement.fhirVersion == "4.0.1"
        async with http.get(stack.fhir_base + "/.well-known/smart-configuration") as response:
            config = await response.json()
        assert config["authorization_endpoint"] == stack.authz_base + "/authorize"
        assert {"launch-ehr", "context-ehr-patient", "permission-v2"} <= set(
            config["capabilities"])


async def test_the_authorization_server_insists_on_pkce_and_one_use_codes() -> None:
    async with running_smart_stack() as stack, ClientSession() as http:
        base = {"response_type": "code", "client_id": PATIENT_PORTAL.client_id,
                "redirect_uri": PATIENT_PORTAL.redirect_uri, "scope": PORTAL_SCOPE,
                "aud": stack.fhir_base, "login_hint": "alice", "code_challenge": "x" * 43,
                "code_challenge_method": "S256"}
        for change, error in (({"code_challenge_method": "plain"}, "invalid_request"),
                              ({"aud": "https://elsewhere.example"}, "invalid_request"),
                              ({"redirect_uri": "https://evil.example/cb"}, "invalid_client"),
                              ({"login_hint": "mallory"}, "access_denied")):
            async with http.get(stack.authz_base + "/authorize", params={**base, **change},
                                allow_redirects=False) as response:
                assert (response.status, (await response.json())["error"]) == (400, error)
        async with http.get(stack.authz_base + "/authorize", params=base,
                            allow_redirects=False) as response:
            code = response.headers["Location"].split("code=")[1].split("&")[0]
        form = {"grant_type": "authorization_code", "code": code, "client_id":
                PATIENT_PORTAL.client_id, "redirect_uri": PATIENT_PORTAL.redirect_uri,
                "code_verifier": "not-the-verifier"}
        for _ in range(2):  # a wrong verifier spends the code: the second try is unknown
            async with http.post(stack.authz_base + "/token", data=form) as response:
                assert (response.status, (await response.json())["error"]) == (
                    400, "invalid_grant")


async def _refused(http: ClientSession, stack: SmartStack, app: Launched, patient_id: str,
                   status: int, code: str, reason: str) -> None:
    got, body = await read_patient(http, stack.fhir_base, patient_id, app.access_token)
    assert got == status
    outcome = OperationOutcome.model_validate(body)
    assert outcome.issue[0].code == code
    assert f"piigate: {reason}" in (outcome.issue[0].diagnostics or "")
    assert app.access_token not in str(body)
