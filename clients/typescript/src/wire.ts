/**
 * Names for the wire enums: Piiano Vault's reason names and the disclosure names, the same
 * strings the Python client uses (clients/piigate_client/wire.py).
 */

import { Disclosure, Reason } from "./gen/piigate/v1/detokenization";

/** How a field was disclosed. */
export type DisclosureName = "raw" | "masked" | "redacted";

/** Piiano Vault's access reasons, as piigate's config and audit trail spell them. */
export type ReasonName =
  | "AppFunctionality"
  | "Analytics"
  | "Notifications"
  | "Marketing"
  | "ThirdPartyMarketing"
  | "FraudPreventionSecurityAndCompliance"
  | "AccountManagement"
  | "Maintenance"
  | "DataSubjectRequest"
  | "Other";

export const REASON_NUMBERS: Readonly<Record<ReasonName, Reason>> = {
  AppFunctionality: Reason.REASON_APP_FUNCTIONALITY,
  Analytics: Reason.REASON_ANALYTICS,
  Notifications: Reason.REASON_NOTIFICATIONS,
  Marketing: Reason.REASON_MARKETING,
  ThirdPartyMarketing: Reason.REASON_THIRD_PARTY_MARKETING,
  FraudPreventionSecurityAndCompliance: Reason.REASON_FRAUD_PREVENTION_SECURITY_AND_COMPLIANCE,
  AccountManagement: Reason.REASON_ACCOUNT_MANAGEMENT,
  Maintenance: Reason.REASON_MAINTENANCE,
  DataSubjectRequest: Reason.REASON_DATA_SUBJECT_REQUEST,
  Other: Reason.REASON_OTHER,
};

const REASON_NAMES = new Map<Reason, ReasonName>(
  Object.entries(REASON_NUMBERS).map(([name, number]) => [number, name as ReasonName]),
);

const DISCLOSURE_NAMES = new Map<Disclosure, DisclosureName>([
  [Disclosure.DISCLOSURE_RAW, "raw"],
  [Disclosure.DISCLOSURE_MASKED, "masked"],
  [Disclosure.DISCLOSURE_REDACTED, "redacted"],
]);

/** The reason's name, or "" for REASON_UNSPECIFIED and numbers this client does not know. */
export function reasonName(reason: Reason): ReasonName | "" {
  return REASON_NAMES.get(reason) ?? "";
}

/** The disclosure's name; an unknown number is reported as "redacted" (no value to trust). */
export function disclosureName(disclosure: Disclosure): DisclosureName {
  return DISCLOSURE_NAMES.get(disclosure) ?? "redacted";
}
