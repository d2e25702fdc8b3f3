"""A SMART-on-FHIR clinician app through the real gateway
(`subject_resolution = "launch_patient"`): the access token is the practitioner's, with
`user/` scopes and the `patient` of its launch context; piigate finds that patient's
record by the patient tag migration wrote, never by the holder's own `pii_token` claim."""

from __future__ import annotations

from typing import Any

import pytest

from piigate_client.errors import PiigateError
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest, extra_claims
from tests.support.stack import Stack, running_stack
from tests.support.wire_caller import WireCaller

CLINICIAN: dict[str, Any] = {
    "subject_resolution": "launch_patient",
    "required_scopes": ["user/Patient.rs"],
    "limits": {"actor_distinct_subjects": 50},
}
PATIENTS = {"alice": "pat-alice-1", "bob": "pat-bob-2"}  # carol is not a patient here


def practitioner_token(stack: Stack, patient: str | None = "pat-alice-1",
                       scope: str = "openid fhirUser launch user/Patient.rs") -> str:
    # The practitioner is a user too (Bob): the holder's own claim must not be what is read.
    return stack.issuer.signer.sign_user_token(UserTokenRequest(
        sub="auth0|bob", pii_token=stack.users["bob"].token_id, audience=demo.FHIR_AUDIENCE,
        scope=scope, claims=extra_claims(patient=patient, fhir_user="Practitioner/7")))


async def refused(app: WireCaller, request: pb.DetokenizeRequest) -> PiigateError:
    with pytest.raises(PiigateError) as failure:
        await app.detokenize(request)
    return failure.value


async def test_a_clinician_sees_the_launch_patient_not_themselves() -> None:
    async with running_stack(gateway_overrides={"profiles": {"smart_on_fhir": CLINICIAN}},
                             fhir_patients=PATIENTS) as stack:
        app = WireCaller(stack.target, await stack.caller_token("fhir-app"))
        try:
            v2 = await app.detokenize(pb.DetokenizeRequest(
                subject_token=practitioner_token(stack)))
            v1 = await app.detokenize(pb.DetokenizeRequest(
                subject_token=practitioner_token(stack, scope="openid user/Patient.read"),
                patient="pat-alice-1"))
            other = await app.detokenize(pb.DetokenizeRequest(
                subject_token=practitioner_token(stack, "pat-bob-2")))
        finally:
            await app.close()
        events = stack.audit_events()
    assert [(f.name, f.value) for f in v2.fields] == [("user_id", "u-7f3a91")]  # Alice's
    assert [(f.name, f.value) for f in v1.fields] == [("user_id", "u-7f3a91")]
    assert [(f.name, f.value) for f in other.fields] == [("user_id", "u-22c0d4")]
    assert v2.token_id == ""
    first = events[0]
    assert (first["outcome"], first["actor_sub"], first["subject_sub"]) == (
        "allowed", "auth0|bob", "pat-alice-1")
    assert first["subject_iss"] == first["actor_iss"] == stack.issuer.issuer
    assert first["token_id"] == stack.users["alice"].token_id


async def test_a_patient_the_practitioners_token_does_not_name_is_refused() -> None:
    async with running_stack(gateway_overrides={"profiles": {"smart_on_fhir": CLINICIAN}},
                             fhir_patients=PATIENTS) as stack:
        app = WireCaller(stack.target, await stack.caller_token("fhir-app"))
        try:
            mismatch = await refused(app, pb.DetokenizeRequest(
                subject_token=practitioner_token(stack), patient="pat-bob-2"))
            no_context = await refused(app, pb.DetokenizeRequest(
                subject_token=practitioner_token(stack, None)))
            patient_scope = await refused(app, pb.DetokenizeRequest(
                subject_token=practitioner_token(stack, scope="openid patient/Patient.rs")))
            not_a_patient = await refused(app, pb.DetokenizeRequest(
                subject_token=practitioner_token(stack, "pat-carol-3")))
        finally:
            await app.close()
        events = stack.audit_events()
    assert (mismatch.code.name, mismatch.reason) == ("PERMISSION_DENIED",
                                                     "LAUNCH_PATIENT_MISMATCH")
    assert no_context.reason == "LAUNCH_CONTEXT_MISSING"
    assert (patient_scope.reason, patient_scope.metadata["missing"]) == (
        "SCOPE_MISSING", "user/Patient.rs")
    assert (not_a_patient.code.name, not_a_patient.reason) == ("NOT_FOUND",
                                                               "SUBJECT_NOT_FOUND")
    assert [e["error_reason"] for e in events] == [
        "LAUNCH_PATIENT_MISMATCH", "LAUNCH_CONTEXT_MISSING", "SCOPE_MISSING",
        "SUBJECT_NOT_FOUND"]
    assert all(e["actor_sub"] == "auth0|bob" for e in events)
