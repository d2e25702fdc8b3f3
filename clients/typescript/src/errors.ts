/**
 * Typed failures built from the `google.rpc.ErrorInfo` piigate attaches to every error.
 *
 *     PiigateError                 code, reason, message, metadata, retryAfterS
 *     ├── InvalidArgument          INVALID_ARGUMENT
 *     ├── Unauthenticated          UNAUTHENTICATED
 *     ├── PermissionDenied         PERMISSION_DENIED
 *     ├── NotFound                 NOT_FOUND
 *     ├── FailedPrecondition       FAILED_PRECONDITION
 *     ├── ResourceExhausted        RESOURCE_EXHAUSTED (retryAfterS from RetryInfo)
 *     ├── Unavailable              UNAVAILABLE
 *     ├── DeadlineExceeded         DEADLINE_EXCEEDED
 *     └── InternalError            anything else
 *
 * Branch on `reason` (UPPER_SNAKE_CASE, stable) or on the class, never on the message.
 * `errorFromServiceError` is the one place a grpc-js failure becomes a public error.
 */

import { Metadata, status as GrpcStatus, type ServiceError } from "@grpc/grpc-js";

import { ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";

export const PIIGATE_DOMAIN = "piigate";
const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo";

/** A failed call: the gRPC code, piigate's reason and its (PII-free) metadata. */
export class PiigateError extends Error {
  /** The gRPC status code (grpc-js `status` numbers). */
  readonly code: GrpcStatus;
  /** piigate's ErrorInfo reason, or the code's name when the failure carries none. */
  readonly reason: string;
  /** ErrorInfo metadata: never a token or a value. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Seconds to wait before retrying, from a google.rpc.RetryInfo, if one was sent. */
  readonly retryAfterS: number | null;
  /** The audit event's request id (ErrorInfo metadata `request_id`), or "" without one. */
  readonly requestId: string;

  constructor(
    code: GrpcStatus,
    reason: string,
    message: string,
    metadata: Record<string, string>,
    retryAfterS: number | null = null,
  ) {
    super(`${GrpcStatus[code] ?? code} ${reason}: ${message}`);
    this.name = new.target.name;
    this.code = code;
    this.reason = reason;
    this.metadata = Object.freeze({ ...metadata });
    this.retryAfterS = retryAfterS;
    this.requestId = metadata.request_id ?? "";
  }
}

/** The request was malformed (INVALID_ARGUMENT). */
export class InvalidArgument extends PiigateError {}
/** The caller credential or the subject token was refused (UNAUTHENTICATED). */
export class Unauthenticated extends PiigateError {}
/** The caller's profile does not allow this (PERMISSION_DENIED). */
export class PermissionDenied extends PiigateError {}
/** The vault holds no data for this user (NOT_FOUND). */
export class NotFound extends PiigateError {}
/** The subject token carries no usable vault token (FAILED_PRECONDITION). */
export class FailedPrecondition extends PiigateError {}
/** A rate limit or abuse cap (RESOURCE_EXHAUSTED); `retryAfterS` says when to retry. */
export class ResourceExhausted extends PiigateError {}
/** piigate or one of its dependencies is unavailable; safe to retry (UNAVAILABLE). */
export class Unavailable extends PiigateError {}
/** The call ran out of time (DEADLINE_EXCEEDED). */
export class DeadlineExceeded extends PiigateError {}
/** Anything else (INTERNAL, UNKNOWN, ...). */
export class InternalError extends PiigateError {}

type ErrorClass = new (
  code: GrpcStatus,
  reason: string,
  message: string,
  metadata: Record<string, string>,
  retryAfterS?: number | null,
) => PiigateError;

const BY_CODE = new Map<GrpcStatus, ErrorClass>([
  [GrpcStatus.INVALID_ARGUMENT, InvalidArgument],
  [GrpcStatus.UNAUTHENTICATED, Unauthenticated],
  [GrpcStatus.PERMISSION_DENIED, PermissionDenied],
  [GrpcStatus.NOT_FOUND, NotFound],
  [GrpcStatus.FAILED_PRECONDITION, FailedPrecondition],
  [GrpcStatus.RESOURCE_EXHAUSTED, ResourceExhausted],
  [GrpcStatus.UNAVAILABLE, Unavailable],
  [GrpcStatus.DEADLINE_EXCEEDED, DeadlineExceeded],
]);

function codeName(code: GrpcStatus): string {
  return GrpcStatus[code] ?? "UNKNOWN";
}

/**
 * Translate a failed grpc-js call. The rich status is read from `grpc-status-details-bin`;
 * without one (a transport failure, a local deadline) the reason is the code's name.
 */
export function errorFromServiceError(error: ServiceError): PiigateError {
  const details = error.metadata instanceof Metadata ? error.metadata.get(STATUS_DETAILS_KEY) : [];
  const encoded = details[0];
  if (encoded instanceof Uint8Array) {
    try {
      return errorFromStatus(Status.decode(encoded));
    } catch {
      // Undecodable details are treated as absent: the code alone still classifies it.
    }
  }
  const Class = BY_CODE.get(error.code) ?? InternalError;
  return new Class(error.code, codeName(error.code), error.details ?? "", {});
}

/** Translate a `google.rpc.Status` (a failed call's, or one BatchDetokenize item's). */
export function errorFromStatus(status: Status): PiigateError {
  const code = (status.code in GrpcStatus ? status.code : GrpcStatus.UNKNOWN) as GrpcStatus;
  let reason = codeName(code);
  let metadata: Record<string, string> = {};
  let retryAfterS: number | null = null;
  for (const detail of status.details) {
    if (detail.typeUrl === ERROR_INFO_TYPE) {
      const info = ErrorInfo.decode(detail.value);
      if (info.domain === PIIGATE_DOMAIN) {
        reason = info.reason;
        metadata = info.metadata;
      }
    } else if (detail.typeUrl === RETRY_INFO_TYPE) {
      const delay = RetryInfo.decode(detail.value).retryDelay;
      if (delay !== undefined) {
        retryAfterS = delay.seconds + delay.nanos / 1e9;
      }
    }
  }
  const Class = BY_CODE.get(code) ?? InternalError;
  return new Class(code, reason, status.message, metadata, retryAfterS);
}
