"""The one error tree of the gateway.

Every expected failure on a request's path is a `GatewayError` subclass that carries its
gRPC status code and its `google.rpc.ErrorInfo` reason. Only the servicer boundary
(`piigate.transport.boundary`) turns them into statuses; anything that is not a `GatewayError`
becomes a bare INTERNAL with no detail.

    GatewayError
    ├── RequestInvalid        INVALID_ARGUMENT     malformed request, bad reason text
    ├── Unauthenticated       UNAUTHENTICATED      caller credential or subject token refused
    │   └── TokenRejected     one subclass per failed token rule (TOKEN_EXPIRED, ...)
    ├── PermissionDenied      PERMISSION_DENIED    no profile; audience/scope/field/reason refused
    ├── RateLimited, ...      RESOURCE_EXHAUSTED   abuse limits (with RetryInfo)
    ├── PiiTokenClaim*        FAILED_PRECONDITION  no usable vault token id in the subject token
    │   SubjectAmbiguous                           several vault tokens carry one subject's tag
    ├── VaultTokenNotFound    NOT_FOUND            the vault has no such (live) token
    │   SubjectNotFound                            no vault token carries the subject's tag
    ├── UpstreamUnavailable   UNAVAILABLE          vault, issuer keys or audit sink unusable now
    ├── VaultTimeout          DEADLINE_EXCEEDED    the vault did not answer within the budget
    ├── CallCancelled         CANCELLED            the caller left (audited, never sent)
    └── VaultMisconfigured    INTERNAL             the vault refused piigate's own key, ...

Messages are fixed, generic and free of PII and tokens: they are written for the wire.
Detail for operators goes into `metadata` (never values, never tokens) and the audit trail.

Each class also says how the audit trail records it: `audit_outcome` is "denied" for a
refusal that is the caller's (or its user's) doing and "failed" for everything else, and
`audit_event` names refusals that are events of their own kind (alerts in a SIEM). The
audit recorder reads both from the error; nothing else classifies errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

import grpc

ERROR_DOMAIN = "piigate"


class GatewayError(Exception):
    """An expected failure with a gRPC status code and an ErrorInfo reason."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    reason: ClassVar[str] = "INTERNAL"
    message: ClassVar[str] = "internal error"
    audit_outcome: ClassVar[str] = "failed"  # allowed | denied | failed
    audit_event: ClassVar[str] = "disclosure"

    def __init__(self, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(self.reason)
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, metadata={dict(self.metadata)!r})"


# --- INVALID_ARGUMENT -------------------------------------------------------------------
class RequestInvalid(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    audit_outcome = "denied"
    reason = "REQUEST_INVALID"
    message = "the request is malformed"


class SubjectTokenMissing(RequestInvalid):
    reason = "SUBJECT_TOKEN_MISSING"
    message = "subject_token is required"


class BatchTooLarge(RequestInvalid):
    reason = "BATCH_TOO_LARGE"
    message = "the batch holds more subject tokens than allowed"


class ReasonInvalid(RequestInvalid):
    reason = "REASON_INVALID"
    message = "the access reason is invalid"


class FieldNameInvalid(RequestInvalid):
    reason = "FIELD_NAME_INVALID"
    message = "a requested field name is invalid"


class ActorTokenMissing(RequestInvalid):
    """An `on_behalf_of` profile needs the acting agent's own access token."""

    reason = "ACTOR_TOKEN_MISSING"
    message = "actor_token is required"


class SubjectRefInvalid(RequestInvalid):
    """An `on_behalf_of` call names no data subject, or names one malformed; metadata
    `detail` says which part, never its value."""

    reason = "SUBJECT_REF_INVALID"
    message = "the subject is missing or malformed"


class SubjectFormNotAccepted(RequestInvalid):
    """The request names its data subject in a form the profile's `subject_resolution`
    does not take (a `subject_token` for `on_behalf_of`; a `subject`, `actor_token` or
    `patient` where it has no meaning); metadata `field` names the request field."""

    reason = "SUBJECT_FORM_NOT_ACCEPTED"
    message = "the request names its subject in a form this caller cannot use"


class PurposeMissing(RequestInvalid):
    """The profile requires a `purpose` (a ticket reference, say) and the call has none."""

    reason = "PURPOSE_MISSING"
    message = "a purpose is required"


class PurposeInvalid(RequestInvalid):
    """The `purpose` is longer than allowed or holds control characters."""

    reason = "PURPOSE_INVALID"
    message = "the purpose is invalid"


# --- UNAUTHENTICATED --------------------------------------------------------------------
class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    audit_outcome = "denied"
    reason = "UNAUTHENTICATED"
    message = "authentication failed"


class CallerCredentialMissing(Unauthenticated):
    reason = "CALLER_CREDENTIAL_MISSING"
    message = "the caller credential is missing"


class CallerPeerMissing(Unauthenticated):
    """The caller's profile requires a client certificate and none was presented."""

    reason = "CALLER_PEER_MISSING"
    message = "the caller presented no client certificate"


class CallerIdentityMissing(Unauthenticated):
    reason = "CALLER_IDENTITY_MISSING"
    message = "the caller credential names no client"


class TokenRejected(Unauthenticated):
    """A token (the caller's credential or the subject token, a JWT or an opaque token's
    introspection answer) failed a verification rule.

    One subclass per rule, so the reason names the rule. The stage that verified the token
    adds `token_role` ("caller" or "subject") to the metadata via `for_role`.
    """

    reason = "TOKEN_REJECTED"
    message = "the token was rejected"

    def for_role(self, role: str) -> TokenRejected:
        """The same rejection with the token's role recorded in its metadata."""
        return type(self)({**self.metadata, "token_role": role})


class TokenTooLarge(TokenRejected):
    reason = "TOKEN_TOO_LARGE"


class TokenMalformed(TokenRejected):
    """Not three base64url segments of JSON objects, duplicate JSON keys, bad encoding."""

    reason = "TOKEN_MALFORMED"


class TokenHeaderForbidden(TokenRejected):
    """`crit`, `jku`, `x5u`, `jwk`, `x5c` (RFC 8725 §3.10: never build keys from the token)."""

    reason = "TOKEN_HEADER_FORBIDDEN"


class TokenAlgorithmNotAllowed(TokenRejected):
    reason = "TOKEN_ALGORITHM_NOT_ALLOWED"


class TokenTypeInvalid(TokenRejected):
    """The `typ` rule of the issuer (RFC 9068 §4 `at+jwt`, Keycloak, Cognito) failed."""

    reason = "TOKEN_TYPE_INVALID"


class TokenIssuerUnknown(TokenRejected):
    reason = "TOKEN_ISSUER_UNKNOWN"


class TokenKeyUnknown(TokenRejected):
    reason = "TOKEN_KEY_UNKNOWN"


class TokenSignatureInvalid(TokenRejected):
    reason = "TOKEN_SIGNATURE_INVALID"


class TokenExpired(TokenRejected):
    reason = "TOKEN_EXPIRED"


class TokenNotYetValid(TokenRejected):
    reason = "TOKEN_NOT_YET_VALID"


class TokenIssuedInFuture(TokenRejected):
    reason = "TOKEN_ISSUED_IN_FUTURE"


class TokenLifetimeExcessive(TokenRejected):
    reason = "TOKEN_LIFETIME_EXCESSIVE"


class TokenTooOld(TokenRejected):
    reason = "TOKEN_TOO_OLD"


class TokenClaimMissing(TokenRejected):
    """A required claim is absent; metadata `claim` names it."""

    reason = "TOKEN_CLAIM_MISSING"


class TokenClaimInvalid(TokenRejected):
    """A claim has the wrong JSON type or value; metadata `claim` names it."""

    reason = "TOKEN_CLAIM_INVALID"


class TokenAudienceInvalid(TokenRejected):
    """The token is not meant for this audience (for the caller: not for piigate)."""

    reason = "TOKEN_AUDIENCE_INVALID"


class TokenInactive(TokenRejected):
    """The issuer's introspection endpoint answered `active: false` for an opaque token
    (RFC 7662 §2.2: revoked, expired, unknown to it, or not for piigate to ask about)."""

    reason = "TOKEN_INACTIVE"


class TokenReplayed(TokenRejected):
    """A profile that asks for one-time tokens saw this token's `jti` before."""

    reason = "TOKEN_REPLAYED"


# --- PERMISSION_DENIED ------------------------------------------------------------------
class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    audit_outcome = "denied"
    reason = "PERMISSION_DENIED"
    message = "permission denied"


class CallerWithoutProfile(PermissionDenied):
    reason = "CALLER_WITHOUT_PROFILE"


class CallerPeerNotAllowed(PermissionDenied):
    """The client certificate's identity is not among the profile's peers."""

    reason = "CALLER_PEER_NOT_ALLOWED"


class AudienceNotAccepted(PermissionDenied):
    reason = "AUDIENCE_NOT_ACCEPTED"


class ScopeMissing(PermissionDenied):
    reason = "SCOPE_MISSING"


class FieldNotAllowed(PermissionDenied):
    reason = "FIELD_NOT_ALLOWED"


class ReasonNotAllowed(PermissionDenied):
    reason = "REASON_NOT_ALLOWED"


class LaunchContextMissing(PermissionDenied):
    """The profile requires a SMART launch `patient` context the token does not carry."""

    reason = "LAUNCH_CONTEXT_MISSING"


class LaunchPatientMismatch(PermissionDenied):
    """The request names a `patient` that is not the token's SMART launch `patient`."""

    reason = "LAUNCH_PATIENT_MISMATCH"


class ActorIssuerNotAllowed(PermissionDenied):
    """The actor token verified, but its issuer is not among the profile's `actor_issuers`
    (a customer's own token presented as an agent's, say)."""

    reason = "ACTOR_ISSUER_NOT_ALLOWED"


class ActorPermissionMissing(PermissionDenied):
    """The actor token does not carry the permission (or role) the profile requires;
    metadata `permission` names the required one (from the config, safe to echo)."""

    reason = "ACTOR_PERMISSION_MISSING"


class SubjectIssuerNotAllowed(PermissionDenied):
    """The named subject's issuer is not among the profile's `subject_issuers` (unknown
    issuer names are refused the same way, so configured names are not revealed)."""

    reason = "SUBJECT_ISSUER_NOT_ALLOWED"


class StepUpRequired(PermissionDenied):
    """A field's raw disclosure needs a reason, `acr` or recent `auth_time` this call lacks,
    and the profile says to refuse rather than fall back; metadata `field` names it."""

    reason = "STEP_UP_REQUIRED"


class TokenCarriesDeniedClaim(PermissionDenied):
    """The subject token carries a claim on the issuer's deny list (raw PII that should
    live only in the vault); metadata `claim` names the claim, never its value."""

    reason = "TOKEN_CARRIES_DENIED_CLAIM"
    audit_event = "pii_in_token"  # the identity provider is leaking PII into tokens


class TokenBindingMismatch(PermissionDenied):
    """The vault token is not tagged for this token's user (or does not exist: for a bound
    profile the two are deliberately indistinguishable)."""

    reason = "TOKEN_BINDING_MISMATCH"
    audit_event = "binding_failure"


class VaultAccessDenied(PermissionDenied):
    """The vault refused the profile's key for this read (its own least-privilege policy)."""

    reason = "VAULT_ACCESS_DENIED"


# --- RESOURCE_EXHAUSTED -----------------------------------------------------------------
class RateLimited(GatewayError):
    """A per-caller or per-subject rate limit; the status also carries a RetryInfo."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"
    message = "too many requests; retry later"

    def __init__(self, retry_after_s: float, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(metadata)
        self.retry_after_s = retry_after_s


class DistinctSubjectsExceeded(GatewayError):
    """The caller asked for more different users within the window than its profile
    allows: bulk harvesting is suspected."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "DISTINCT_SUBJECTS_EXCEEDED"
    message = "too many different users requested; retry later"
    audit_event = "harvesting_suspected"


# --- FAILED_PRECONDITION / NOT_FOUND ----------------------------------------------------
class PiiTokenClaimMissing(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    audit_outcome = "denied"
    reason = "PII_TOKEN_CLAIM_MISSING"
    message = "the subject token carries no vault token"


class PiiTokenClaimInvalid(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    audit_outcome = "denied"
    reason = "PII_TOKEN_CLAIM_INVALID"
    message = "the subject token's vault token is malformed"


class VaultTokenNotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    audit_outcome = "denied"
    reason = "VAULT_TOKEN_NOT_FOUND"
    message = "no data found for this user"


class SubjectNotFound(GatewayError):
    """No live vault token carries the named subject's (or launch patient's) tag: the
    subject was never migrated, or their token was rotated or deleted."""

    code = grpc.StatusCode.NOT_FOUND
    audit_outcome = "denied"
    reason = "SUBJECT_NOT_FOUND"
    message = "no data found for this subject"


class SubjectAmbiguous(GatewayError):
    """More than one live vault token carries the subject's tag. Tags are written one per
    subject per collection, so this is a migration fault; guessing could disclose another
    record, so nothing is disclosed (and the event is a binding failure of its own)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "SUBJECT_AMBIGUOUS"
    message = "the subject's data cannot be told apart"
    audit_event = "binding_failure"


# --- UNAVAILABLE / DEADLINE_EXCEEDED ----------------------------------------------------
class UpstreamUnavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UPSTREAM_UNAVAILABLE"
    message = "a dependency is unavailable; retry later"


class VaultUnavailable(UpstreamUnavailable):
    reason = "VAULT_UNAVAILABLE"


class VaultResponseInvalid(UpstreamUnavailable):
    reason = "VAULT_RESPONSE_INVALID"


class IssuerKeysUnavailable(UpstreamUnavailable):
    reason = "ISSUER_KEYS_UNAVAILABLE"


class AuditUnavailable(UpstreamUnavailable):
    reason = "AUDIT_UNAVAILABLE"


class ReplayGuardFull(UpstreamUnavailable):
    """The one-time-token memory is full of unexpired entries; refusing is safer than
    forgetting one (which would allow its replay)."""

    reason = "REPLAY_GUARD_FULL"


class StateUnavailable(UpstreamUnavailable):
    """The shared store behind one-time tokens and abuse limits (`[state]`) did not
    answer usably within the budget; controls set to fail closed refuse the call."""

    reason = "STATE_UNAVAILABLE"


class VaultTimeout(GatewayError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "VAULT_TIMEOUT"
    message = "the vault did not answer in time"


class CallCancelled(GatewayError):
    """The caller went away (cancelled, or its deadline passed) before the answer. Never
    sent (nobody is listening); recorded so that a decision still has its audit event."""

    code = grpc.StatusCode.CANCELLED
    reason = "CALL_CANCELLED"
    message = "the call was cancelled"


# --- INTERNAL ---------------------------------------------------------------------------
class VaultMisconfigured(GatewayError):
    """The vault refused piigate's credentials or the profile's collection: an operator
    problem, not the caller's."""

    code = grpc.StatusCode.INTERNAL
    reason = "VAULT_MISCONFIGURED"
    message = "the gateway is misconfigured"
