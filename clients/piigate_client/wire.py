"""Names for the wire enums, shared by the client and the server so they cannot drift."""

from __future__ import annotations

from typing import Literal

from piigate_client.v1 import detokenization_pb2 as pb

DisclosureName = Literal["raw", "masked", "redacted"]

# Wire enum number <-> Piiano Vault reason name.
REASON_NAMES: dict[pb.Reason.ValueType, str] = {
    pb.REASON_APP_FUNCTIONALITY: "AppFunctionality",
    pb.REASON_ANALYTICS: "Analytics",
    pb.REASON_NOTIFICATIONS: "Notifications",
    pb.REASON_MARKETING: "Marketing",
    pb.REASON_THIRD_PARTY_MARKETING: "ThirdPartyMarketing",
    pb.REASON_FRAUD_PREVENTION_SECURITY_AND_COMPLIANCE: (
        "FraudPreventionSecurityAndCompliance"
    ),
    pb.REASON_ACCOUNT_MANAGEMENT: "AccountManagement",
    pb.REASON_MAINTENANCE: "Maintenance",
    pb.REASON_DATA_SUBJECT_REQUEST: "DataSubjectRequest",
    pb.REASON_OTHER: "Other",
}
REASON_NUMBERS: dict[str, pb.Reason.ValueType] = {
    name: number for number, name in REASON_NAMES.items()
}

DISCLOSURE_NAMES: dict[pb.Disclosure.ValueType, DisclosureName] = {
    pb.DISCLOSURE_RAW: "raw",
    pb.DISCLOSURE_MASKED: "masked",
    pb.DISCLOSURE_REDACTED: "redacted",
}
DISCLOSURE_NUMBERS: dict[DisclosureName, pb.Disclosure.ValueType] = {
    name: number for number, name in DISCLOSURE_NAMES.items()
}
