"""Typed clients for `piigate.v1.DetokenizationService`: `DetokenizationClient` (blocking)
and `AsyncDetokenizationClient` (asyncio).

Every call has a deadline; the caller's own access token comes from a `credential`
callable on every call (so it can refresh, see `piigate_client.oauth`), or is left out
(`credential=None`) for a caller known by its client certificate alone; failures are
raised as `piigate_client.errors.PiigateError` subclasses carrying piigate's reason.

Retries are gRPC's own (gRFC A6), set as the channel's service config (`RETRY_POLICY`):
only UNAVAILABLE is retried, which piigate answers when nothing was disclosed (vault or
audit trail unavailable, issuer keys unfetchable) and which the transport reports when
no connection could be made; at most 3 attempts, exponential backoff from 0.1 s to 1 s
with gRPC's jitter, all within the call's deadline. Refusals (UNAUTHENTICATED,
PERMISSION_DENIED, INVALID_ARGUMENT, ...) are never retried: the same request would get
the same answer, and a second audit event. A caller's own `grpc.service_config` option
replaces the policy.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import grpc

from piigate_client.errors import PiigateError, error_from_rpc, error_from_status
from piigate_client.oauth import ClientCredentials
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from piigate_client.wire import DISCLOSURE_NAMES, REASON_NAMES, REASON_NUMBERS, DisclosureName

DEFAULT_TIMEOUT_S = 2.0
SERVICE_NAME = "piigate.v1.DetokenizationService"
RETRY_POLICY = {
    "methodConfig": [{
        "name": [{"service": SERVICE_NAME}],
        "retryPolicy": {
            "maxAttempts": 3,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Field:
    """One disclosed field. `value` is empty when `disclosure` is "redacted"."""

    name: str
    value: str
    disclosure: DisclosureName

    def __repr__(self) -> str:  # keep values out of logs and tracebacks by accident
        return f"Field(name={self.name!r}, disclosure={self.disclosure!r})"


@dataclass(frozen=True, slots=True)
class Detokenized:
    """A successful answer: the vault token id, the deciding profile, the reason used,
    the fields in profile order, and the request id of its audit event."""

    token_id: str
    profile: str
    reason: str
    fields: tuple[Field, ...]
    request_id: str = ""  # empty from a gateway older than the field

    def __getitem__(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)


def _request(
    subject_token: str, fields: Sequence[str], reason: str | None, adhoc_reason: str,
    patient: str = "",
) -> pb.DetokenizeRequest:
    if reason is not None and reason not in REASON_NUMBERS:
        raise ValueError(f"unknown reason {reason!r}; use one of {sorted(REASON_NUMBERS)}")
    return pb.DetokenizeRequest(
        subject_token=subject_token,
        fields=list(fields),
        reason=REASON_NUMBERS[reason] if reason else pb.REASON_UNSPECIFIED,
        adhoc_reason=adhoc_reason,
        patient=patient,
    )


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """A customer named without their token (`on_behalf_of` profiles): the configured
    issuer name at piigate and the subject (`sub`) that issuer knows them as."""

    issuer: str
    subject: str


def _batch_request(
    subject_tokens: Sequence[str], fields: Sequence[str], reason: str | None, adhoc_reason: str,
    *, subjects: Sequence[SubjectRef] = (), actor_token: str = "", purpose: str = "",
) -> pb.BatchDetokenizeRequest:
    single = _request("", fields, reason, adhoc_reason)
    return pb.BatchDetokenizeRequest(
        subject_tokens=list(subject_tokens), fields=single.fields, reason=single.reason,
        adhoc_reason=single.adhoc_reason,
        subjects=[pb.SubjectRef(issuer=s.issuer, subject=s.subject) for s in subjects],
        actor_token=actor_token, purpose=purpose,
    )


def _batch_results(response: pb.BatchDetokenizeResponse) -> list[Detokenized | PiigateError]:
    return [
        _result(item.response) if item.status.code == 0 else error_from_status(item.status)
        for item in response.results
    ]


def _result(response: pb.DetokenizeResponse) -> Detokenized:
    return Detokenized(
        token_id=response.token_id,
        profile=response.profile,
        reason=REASON_NAMES.get(response.reason, ""),
        fields=tuple(
            Field(f.name, f.value, DISCLOSURE_NAMES[f.disclosure]) for f in response.fields
        ),
        request_id=response.request_id,
    )


def _authorization(token: str | None) -> tuple[tuple[str, str], ...]:
    """The caller's bearer credential as call metadata; none for a caller known only by
    its client certificate (mutual TLS)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


def _channel_options(options: Sequence[tuple[str, int | str]]) -> list[tuple[str, int | str]]:
    ours: list[tuple[str, int | str]] = [("grpc.enable_retries", 1)]
    if not any(name == "grpc.service_config" for name, _ in options):
        ours.append(("grpc.service_config", json.dumps(RETRY_POLICY)))
    return [*ours, *options]


class DetokenizationClient:
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        target: str,
        credential: Callable[[], str] | None,
        *,
        channel_credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self._channel = (
            grpc.secure_channel(target, channel_credentials, _channel_options(options))
            if channel_credentials is not None
            else grpc.insecure_channel(target, _channel_options(options))
        )
        self._stub = pb_grpc.DetokenizationServiceStub(self._channel)
        self._credential = credential
        self._timeout_s = timeout_s

    def detokenize(
        self,
        subject_token: str,
        *,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
        patient: str = "",
    ) -> Detokenized:
        """Exchange the user's access token for the fields this caller's profile allows.
        `patient`: the FHIR Patient id a SMART app has in context (it must be the token's
        launch `patient`)."""
        request = _request(subject_token, fields, reason, adhoc_reason, patient)
        metadata = self._metadata()
        try:
            response = self._stub.Detokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _result(response)

    def detokenize_many(
        self,
        subject_tokens: Sequence[str],
        *,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
    ) -> list[Detokenized | PiigateError]:
        """Many users in one call: a result or a typed error per token, in order. The call
        itself raises only for the caller's own failure or a malformed batch."""
        request = _batch_request(subject_tokens, fields, reason, adhoc_reason)
        metadata = self._metadata()
        try:
            response = self._stub.BatchDetokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _batch_results(response)

    def detokenize_on_behalf_of(
        self,
        actor_token: str,
        subjects: Sequence[SubjectRef],
        *,
        purpose: str,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
    ) -> list[Detokenized | PiigateError]:
        """Support tooling (`on_behalf_of` profiles): customers named by issuer and
        subject, the acting agent's own access token, and the ticket as `purpose`. The
        customers' tokens are never needed: piigate finds their vault tokens by the
        binding tag. A result or a typed error per customer, in order."""
        request = _batch_request((), fields, reason, adhoc_reason, subjects=subjects,
                                 actor_token=actor_token, purpose=purpose)
        metadata = self._metadata()
        try:
            response = self._stub.BatchDetokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _batch_results(response)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return _authorization(self._credential() if self._credential else None)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDetokenizationClient:
    """asyncio client. Use as an async context manager, or await `close()`.

    A `ClientCredentials` credential is awaited through its `token_async`, so a token
    request never blocks the event loop; any other callable may return a string or an
    awaitable (a plain blocking callable would block the loop: pass an async one)."""

    def __init__(
        self,
        target: str,
        credential: Callable[[], str] | Callable[[], Awaitable[str]] | None,
        *,
        channel_credentials: grpc.ChannelCredentials | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        self._channel = (
            grpc.aio.secure_channel(target, channel_credentials, _channel_options(options))
            if channel_credentials is not None
            else grpc.aio.insecure_channel(target, _channel_options(options))
        )
        self._stub = pb_grpc.DetokenizationServiceStub(self._channel)
        self._credential = (
            credential.token_async if isinstance(credential, ClientCredentials) else credential
        )
        self._timeout_s = timeout_s

    async def detokenize(
        self,
        subject_token: str,
        *,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
        patient: str = "",
    ) -> Detokenized:
        """Exchange the user's access token for the fields this caller's profile allows.
        `patient`: the FHIR Patient id a SMART app has in context (it must be the token's
        launch `patient`)."""
        request = _request(subject_token, fields, reason, adhoc_reason, patient)
        metadata = await self._metadata()
        try:
            response = await self._stub.Detokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _result(response)

    async def detokenize_many(
        self,
        subject_tokens: Sequence[str],
        *,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
    ) -> list[Detokenized | PiigateError]:
        """Many users in one call: a result or a typed error per token, in order. The call
        itself raises only for the caller's own failure or a malformed batch."""
        request = _batch_request(subject_tokens, fields, reason, adhoc_reason)
        metadata = await self._metadata()
        try:
            response = await self._stub.BatchDetokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _batch_results(response)

    async def detokenize_on_behalf_of(
        self,
        actor_token: str,
        subjects: Sequence[SubjectRef],
        *,
        purpose: str,
        fields: Sequence[str] = (),
        reason: str | None = None,
        adhoc_reason: str = "",
        timeout_s: float | None = None,
    ) -> list[Detokenized | PiigateError]:
        """As `DetokenizationClient.detokenize_on_behalf_of`."""
        request = _batch_request((), fields, reason, adhoc_reason, subjects=subjects,
                                 actor_token=actor_token, purpose=purpose)
        metadata = await self._metadata()
        try:
            response = await self._stub.BatchDetokenize(
                request, timeout=timeout_s or self._timeout_s, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return _batch_results(response)

    async def _metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._credential() if self._credential else None
        if inspect.isawaitable(token):
            token = await token
        return _authorization(token)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
