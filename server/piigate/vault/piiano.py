"""Facts of Piiano Vault's REST API shared by piigate's vault client, the local vault and
the migration helper (see ../shared/reference/piiano-vault-api.md)."""

from __future__ import annotations

API_BASE = "/api/pvlt/1.0"

# Exactly the access reasons Piiano Vault accepts on every data call; `Other` requires
# an `adhoc_reason`.
REASONS: tuple[str, ...] = (
    "AppFunctionality",
    "Analytics",
    "Notifications",
    "Marketing",
    "ThirdPartyMarketing",
    "FraudPreventionSecurityAndCompliance",
    "AccountManagement",
    "Maintenance",
    "DataSubjectRequest",
    "Other",
)
