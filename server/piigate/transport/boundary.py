"""The one place where errors become gRPC statuses.

`answer(call)` is the transport's one way to run the pipeline: it gives back the call's
response or the `grpc.Status` to end it with. An expected `GatewayError` becomes its
status code with exactly one `google.rpc.ErrorInfo` (domain "piigate", its UPPER_SNAKE
reason, its metadata) in the `grpc-status-details-bin` trailer. Anything else becomes a
bare INTERNAL with no detail: internals, tracebacks and values never reach the wire
(grpclib's rule).
"""

from __future__ import annotations

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


def status_of(error: GatewayError) -> grpc.Status:
    """The rich gRPC status for an expected error."""
    return rpc_status.to_status(rich_status(error))


def rich_status(error: GatewayError) -> status_pb2.Status:
    """The `google.rpc.Status` for an expected error: its code, its fixed message, exactly
    one ErrorInfo (and a RetryInfo for rate limits)."""
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
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


INTERNAL = status_of(GatewayError())


async def answer(call: Awaitable[T]) -> T | grpc.Status:
    """Await `call`: its result, or the status that ends the call instead."""
    try:
        return await call
    except GatewayError as exc:
        log.info("refused: %s", exc.reason)
        return status_of(exc)
    except Exception as exc:
        # Type only: an exception's text could hold a value or a token.
        log.error("unexpected %s; answered INTERNAL", type(exc).__name__)
        return INTERNAL
