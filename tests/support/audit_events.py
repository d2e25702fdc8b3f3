"""Audit events for tests of the audit trail: numbered, distinct, without PII."""

from __future__ import annotations

from piigate.audit.event import AuditEvent, FieldDisclosure


def numbered_event(n: int) -> AuditEvent:
    """An allowed disclosure whose request id, subject and token id carry `n`."""
    return AuditEvent(
        time=1700000000.0 + n, request_id=f"r{n}", outcome="allowed", caller="fhir-app",
        subject_iss="https://issuer/", subject_sub=f"user-{n}", token_id=f"tok-{n}",
        profile="fhir", reason="AppFunctionality",
        fields=(FieldDisclosure("user_id", "raw"), FieldDisclosure("ssn", "masked")),
    )
