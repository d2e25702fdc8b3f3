"""Typed failures built from the `google.rpc.ErrorInfo` piigate attaches to every error.

Branch on `reason` (UPPER_SNAKE_CASE, stable) or on the exception class (one per gRPC
code), never on the message text. `request_id` names the call's audit event: quote it to
piigate's operators, who find the event (and its log line) by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

PIIGATE_DOMAIN = "piigate"
REQUEST_ID_TRAILER = "piigate-request-id"


class PiigateError(Exception):
    """A failed call: the gRPC code, piigate's reason and its (PII-free) metadata, and
    the request id of its audit event (None when piigate's code never saw the call, e.g.
    no connection could be made)."""

    def __init__(
        self, code: grpc.StatusCode, reason: str, message: str, metadata: Mapping[str, str],
        request_id: str | None = None,
    ) -> None:
        request_id = request_id or metadata.get("request_id") or None
        shown = f" (request {request_id})" if request_id else ""
        super().__init__(f"{code.name} {reason}: {message}{shown}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata))
        self.request_id = request_id
        self.retry_after_s: float | None = None  # from a google.rpc.RetryInfo, if sent


class InvalidArgument(PiigateError):
    """The request was malformed (INVALID_ARGUMENT)."""


class Unauthenticated(PiigateError):
    """The caller credential or the subject token was refused (UNAUTHENTICATED)."""


class PermissionDenied(PiigateError):
    """The caller's profile does not allow this (PERMISSION_DENIED)."""


class NotFound(PiigateError):
    """The vault holds no data for this user (NOT_FOUND)."""


class FailedPrecondition(PiigateError):
    """The subject token carries no usable vault token (FAILED_PRECONDITION)."""


class ResourceExhausted(PiigateError):
    """A rate limit or abuse cap (RESOURCE_EXHAUSTED); `retry_after_s` says when to retry."""


class Unavailable(PiigateError):
    """piigate or one of its dependencies is unavailable; safe to retry (UNAVAILABLE)."""


class DeadlineExceeded(PiigateError):
    """The call ran out of time (DEADLINE_EXCEEDED)."""


class InternalError(PiigateError):
    """Anything else (INTERNAL, UNKNOWN, ...)."""


_BY_CODE: dict[grpc.StatusCode, type[PiigateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_from_rpc(error: grpc.RpcError) -> PiigateError:
    """Translate a failed call; without an ErrorInfo (e.g. a transport failure) the reason
    is the gRPC code's name."""
    code: grpc.StatusCode = error.code()
    status = rpc_status.from_call(error)
    if status is None:
        request_id = _trailer(error, REQUEST_ID_TRAILER)
        return _BY_CODE.get(code, InternalError)(code, code.name, error.details() or "", {},
                                                 request_id)
    return error_from_status(status)


def _trailer(error: grpc.RpcError, key: str) -> str | None:
    trailing = getattr(error, "trailing_metadata", None)
    for k, v in (trailing() if callable(trailing) else None) or ():
        if k == key and isinstance(v, str):
            return v
    return None


def error_from_status(status: status_pb2.Status) -> PiigateError:
    """Translate a `google.rpc.Status` (a failed call's, or one BatchDetokenize item's)."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    reason, metadata, retry_after_s = code.name, {}, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == PIIGATE_DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after_s = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    failure = _BY_CODE.get(code, InternalError)(code, reason, status.message, metadata)
    failure.retry_after_s = retry_after_s
    return failure


_CODES = {c.value[0]: c for c in grpc.StatusCode}
