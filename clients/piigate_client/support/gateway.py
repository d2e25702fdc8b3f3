"""The gRPC edge: one BatchDetokenize call for a chunk of customers, on behalf of the
agent, and every failure as a `lookup.Failure`.

The request names the customers (`subjects`), carries the agent's own access token as
`actor_token` and the ticket as `purpose`; the service's own credential goes in call
metadata as for any caller (a client-credentials token), or is its client certificate
(mutual TLS, then no token at all).

Hand-written rather than `DetokenizationClient.detokenize_many` for two reasons: the run
needs each item's raw status (its RetryInfo, its request id) to decide retries itself,
and the channel's own retry policy is switched off so that RetryInfo, not gRPC's
backoff, times the next attempt and no call is retried twice over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from piigate_client.chunking import chunks
from piigate_client.client import Field
from piigate_client.errors import PiigateError, error_from_rpc, error_from_status
from piigate_client.oauth import TokenEndpointError
from piigate_client.support.customers import Customer
from piigate_client.support.lookup import (
    BATCH_TOO_LARGE,
    CallFailed,
    Failed,
    Failure,
    Found,
    Outcome,
    Plan,
)
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from piigate_client.wire import DISCLOSURE_NAMES, REASON_NUMBERS

# The answer to a full batch of several fields each can exceed gRPC's 4 MiB default.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Query:
    """What every customer in the run is asked for, and on whose behalf."""

    agent_token: str = field(repr=False)
    purpose: str
    fields: tuple[str, ...] = ()
    reason: str | None = None
    adhoc_reason: str = ""

    def __post_init__(self) -> None:
        if self.reason is not None and self.reason not in REASON_NUMBERS:
            raise ValueError(f"unknown reason; use one of {', '.join(sorted(REASON_NUMBERS))}")

    def request(self, customers: Sequence[Customer]) -> pb.BatchDetokenizeRequest:
        """The BatchDetokenize request for `customers` (also what chunks are sized by)."""
        return pb.BatchDetokenizeRequest(
            subjects=[pb.SubjectRef(issuer=c.issuer, subject=c.subject) for c in customers],
            actor_token=self.agent_token,
            purpose=self.purpose,
            fields=list(self.fields),
            reason=REASON_NUMBERS[self.reason] if self.reason else pb.REASON_UNSPECIFIED,
            adhoc_reason=self.adhoc_reason,
        )


class PlanError(ValueError):
    """The customers cannot be cut into requests of the message size (exit status 2)."""


def chunk_plan(query: Query, max_message_bytes: int) -> Plan:
    """Cut customers into calls of at most `max_items` whose whole request stays within
    `max_message_bytes` (the gateway's `server.max_request_bytes`), measured as protobuf
    wire bytes: the request without subjects, plus each `SubjectRef` entry."""
    budget = max_message_bytes - query.request(()).ByteSize()

    def entry_bytes(customer: Customer) -> int:
        # Exactly its share of the request: a message's fields concatenate on the wire.
        ref = pb.SubjectRef(issuer=customer.issuer, subject=customer.subject)
        return pb.BatchDetokenizeRequest(subjects=[ref]).ByteSize()

    def plan(customers: Sequence[Customer], max_items: int) -> list[list[Customer]]:
        if budget < 1:
            raise PlanError(f"the agent token, ticket and fields alone exceed "
                            f"--max-message-bytes ({max_message_bytes})")
        try:
            return chunks(customers, max_items, budget, entry_bytes)
        except ValueError as exc:
            raise PlanError(f"a customer does not fit --max-message-bytes: {exc}") from None

    return plan


class GrpcGateway:
    """`lookup.Gateway` over a real channel. Use as a context manager, or `close()`."""

    def __init__(
        self,
        target: str,
        query: Query,
        caller_credential: Callable[[], str] | None,
        channel_credentials: grpc.ChannelCredentials | None,
        timeout_s: float,
    ) -> None:
        options: list[tuple[str, int | str]] = [
            ("grpc.enable_retries", 0),  # see the module docstring
            ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
        ]
        self._channel = (
            grpc.secure_channel(target, channel_credentials, options)
            if channel_credentials is not None
            else grpc.insecure_channel(target, options)
        )
        self._stub = pb_grpc.DetokenizationServiceStub(self._channel)
        self._query = query
        self._caller_credential = caller_credential
        self._timeout_s = timeout_s

    def lookup(self, customers: Sequence[Customer]) -> list[Outcome]:
        request = self._query.request(customers)
        metadata = self._metadata()
        try:
            response = self._stub.BatchDetokenize(
                request, timeout=self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise _call_failed(error_from_rpc(exc)) from None
        if len(response.results) != len(customers):
            raise CallFailed(Failure("INTERNAL", "ANSWER_COUNT_MISMATCH"))
        return [_outcome(c, item) for c, item in zip(customers, response.results, strict=True)]

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._caller_credential is None:
            return ()  # known by its client certificate alone
        try:
            token = self._caller_credential()
        except TokenEndpointError as exc:
            raise CallFailed(Failure("TOKEN_ENDPOINT", exc.error)) from None
        return (("authorization", f"Bearer {token}"),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def failure_of(error: PiigateError) -> Failure:
    """piigate's typed error as a row's failure: code, reason, request id, retry hint."""
    return Failure(code=error.code.name, reason=error.reason,
                   request_id=error.request_id or "", retry_after_s=error.retry_after_s)


def _outcome(customer: Customer, item: pb.BatchDetokenizeResult) -> Outcome:
    if item.status.code != 0:
        return Failed(customer, failure_of(error_from_status(item.status)))
    answer = item.response
    fields = tuple(
        Field(f.name, f.value, DISCLOSURE_NAMES[f.disclosure])
        for f in answer.fields
        if f.disclosure in DISCLOSURE_NAMES  # an unknown kind is not shown as if known
    )
    return Found(customer, fields, answer.request_id)


def _call_failed(error: PiigateError) -> CallFailed:
    batch_max = None
    if error.reason == BATCH_TOO_LARGE:
        text = error.metadata.get("max", "")
        batch_max = int(text) if text.isdecimal() else None
    return CallFailed(failure_of(error), batch_max)

