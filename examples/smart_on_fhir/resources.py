"""The FHIR resources the facade serves, built with `fhir.resources` (pure: values in,
validated resources out).

`fhir.resources` 8 ships R5 as its default and R4B as `fhir.resources.R4B`; it has no R4
(4.0.1) package of its own. Patient, OperationOutcome and CapabilityStatement have the
same structure in R4 and R4B for every element used here, so the facade declares R4
(`fhirVersion` 4.0.1, what SMART R4 apps expect) and the models validate each resource.
"""

from __future__ import annotations

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
# Where the internal user id lives: the identifier's system names the assigning
# authority (an example URI here), its type says it is a medical record number.
USER_ID_SYSTEM = "https://example.com/fhir/sid/internal-user-id"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
RESTFUL_SECURITY = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def patient(patient_id: str, user_id: str) -> Patient:
    """A Patient whose only identifier is the internal user id piigate disclosed."""
    return Patient.model_validate({
        "resourceType": "Patient",
        "id": patient_id,
        "identifier": [{
            "use": "usual",
            "type": {"coding": [{"system": V2_0203, "code": "MR"}],
                     "text": "Internal user id"},
            "system": USER_ID_SYSTEM,
            "value": user_id,
        }],
    })


def outcome(code: str, diagnostics: str) -> OperationOutcome:
    """An error OperationOutcome (`code` from the FHIR IssueType value set, e.g.
    `forbidden`, `login`, `not-found`, `transient`). `diagnostics` never carries a
    token, a value or piigate's metadata: only piigate's reason and request id."""
    return OperationOutcome.model_validate({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    })


def capability_statement(authorize_url: str, token_url: str, date: str) -> CapabilityStatement:
    """`GET /metadata`: read of Patient, secured by SMART-on-FHIR with these endpoints."""
    return CapabilityStatement.model_validate({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "kind": "instance",
        "implementation": {"description": "piigate SMART-on-FHIR example facade"},
        "fhirVersion": FHIR_VERSION,
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{"system": RESTFUL_SECURITY, "code": "SMART-on-FHIR"}]}],
                "extension": [{"url": SMART_OAUTH_URIS, "extension": [
                    {"url": "authorize", "valueUri": authorize_url},
                    {"url": "token", "valueUri": token_url},
                ]}],
            },
            "resource": [{"type": "Patient", "interaction": [{"code": "read"}]}],
        }],
    })


def to_json(resource: Patient | OperationOutcome | CapabilityStatement) -> str:
    """The resource's FHIR JSON (empty elements left out, as FHIR requires)."""
    text: str = resource.model_dump_json(exclude_none=True)
    return text
