"""The one place where errors become gRPC statuses.

`answer(call)` is the transport's one way to run the pipeline: it gives back the call's
response or the `grpc.Status` to end it with. An expected `GatewayError` becomes its
status code with exactly one `google.rpc.ErrorInfo` (domain "piigate", its UPPER_SNAKE
reason, its metadata) in the `grpc-status-details-bin` trailer. Anything else becomes a
bare INTERNAL with no detail: internals, tracebacks and values never reach the wire
(grpclib's rule).

Every answer to a call names the call's audit event: the `piigate-request-id` trailer,
and `request_id` in every ErrorInfo's metadata (a batch item's is the item's own).
Refusals are logged where their event is written (`piigate.audit.recorder`), with all
its facts; this module logs only what nobody else saw.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from piigate.errors import ERROR_DOMAIN, GatewayError, RateLimited

log = logging.getLogger(__name__)
T = TypeVar("T")
REQUEST_ID_TRAILER = "piigate-request-id"
REQUEST_ID_KEY = "request_id"  # in ErrorInfo metadata


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
    grpc.Status,  # type: ignore[misc]  # grpc is untyped
):
    """A status with trailers of its own (grpc_status's shape)."""


def status_of(error: GatewayError, request_id: str | None = None) -> grpc.Status:
    """The rich gRPC status for an expected error; with `request_id`, in its ErrorInfo
    and in the `piigate-request-id` trailer."""
    status = rpc_status.to_status(rich_status(error, request_id))
    if request_id is None:
        return status
    return _Status(status.code, status.details,
                   (*status.trailing_metadata, (REQUEST_ID_TRAILER, request_id)))


def internal(request_id: str) -> grpc.Status:
    """The bare INTERNAL of a call whose audit event is `request_id`."""
    return status_of(GatewayError(), request_id)


def rich_status(error: GatewayError, request_id: str | None = None) -> status_pb2.Status:
    """The `google.rpc.Status` for an expected error: its code, its fixed message, exactly
    one ErrorInfo (with `request_id` in its metadata when given), and a RetryInfo for
    rate limits."""
    metadata = dict(error.metadata)
    if request_id is not None:
        metadata[REQUEST_ID_KEY] = request_id
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    if isinstance(error, RateLimited):
        # AIP-193's one-ErrorInfo rule is about ErrorInfo; a RetryInfo beside it tells
        # well-behaved clients when to come back.
        delay = max(error.retry_after_s, 0.0)
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
            seconds=int(delay), nanos=int((delay % 1) * 1e9))))
        details.append(retry)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


INTERNAL = status_of(GatewayError())  # for a call that could not even be read


async def answer(call: Awaitable[T], request_id: str) -> T | grpc.Status:
    """Await `call` (whose audit event is `request_id`): its result, or the status that
    ends the call instead."""
    try:
        return await call
    except GatewayError as exc:
        return status_of(exc, request_id)
    except Exception as exc:
        # Type only: an exception's text could hold a value or a token.
        log.error("unexpected %s; answered INTERNAL", type(exc).__name__,
                  extra={"request_id": request_id})
        return internal(request_id)
