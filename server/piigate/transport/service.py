"""The gRPC adapter: wire messages in, the pipeline, a wire message or a status out.

Translation only; every decision is made in the stages behind the pipeline. It runs on
the pipeline's event loop: `piigate.transport.bridge` reads each call's `Call` facts
(metadata, deadline, peer) on grpc's handler thread and hands them here with the request.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.rpc import status_pb2

from piigate.errors import GatewayError
from piigate.identity.peer import PeerIdentity
from piigate.pipeline import Call, DetokenizationPipeline, Result, SubjectRef
from piigate.policy.decision import DisclosureRequest
from piigate.policy.shaping import Disclosure
from piigate.transport.boundary import answer, rich_status
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.wire import DISCLOSURE_NUMBERS, REASON_NAMES, REASON_NUMBERS

Request = pb.DetokenizeRequest | pb.BatchDetokenizeRequest


class DetokenizationService:
    """`piigate.v1.DetokenizationService`'s two methods, on the event loop."""

    def __init__(self, pipeline: DetokenizationPipeline) -> None:
        self._pipeline = pipeline

    async def detokenize(self, call: Call) -> pb.DetokenizeResponse | grpc.Status:
        return await answer(self._detokenize(call), call.request_id)

    async def batch_detokenize(self, call: Call) -> pb.BatchDetokenizeResponse | grpc.Status:
        return await answer(self._batch(call), call.request_id)

    async def _detokenize(self, call: Call) -> pb.DetokenizeResponse:
        (result,) = await self._pipeline.run(call)
        if isinstance(result.outcome, GatewayError):
            raise result.outcome  # answered under the call's id, which is the item's
        return _response(result.outcome, result.request_id)

    async def _batch(self, call: Call) -> pb.BatchDetokenizeResponse:
        results = await self._pipeline.run(call)
        return pb.BatchDetokenizeResponse(results=[_result(r) for r in results])


def describe(
    request: Request,
    metadata: Sequence[tuple[str, str | bytes]],
    time_remaining_s: float | None,
    peer: PeerIdentity | None,
) -> Call:
    """The pipeline's `Call` for a request and what its transport knows of it."""
    if isinstance(request, pb.DetokenizeRequest):
        named = (_subject(request.subject),) if request.HasField("subject") else ()
        return Call(metadata, peer, time_remaining_s, (request.subject_token,),
                    _disclosure_request(request), subjects=named,
                    actor_token=request.actor_token)
    return Call(metadata, peer, time_remaining_s, tuple(request.subject_tokens),
                _disclosure_request(request), batch=True,
                subjects=tuple(map(_subject, request.subjects)),
                actor_token=request.actor_token)


def _subject(ref: pb.SubjectRef) -> SubjectRef:
    return SubjectRef(ref.issuer, ref.subject)


def _disclosure_request(request: Request) -> DisclosureRequest:
    """What the caller asks for, read from the wire."""
    reason: str | None = None
    if request.reason != pb.REASON_UNSPECIFIED:
        # An unknown enum number passes through as a name no profile allows, so the
        # decision stage refuses it and the refusal is audited like any other.
        reason = REASON_NAMES.get(request.reason, f"unknown reason {int(request.reason)}")
    return DisclosureRequest(
        fields=tuple(request.fields), reason=reason, adhoc_reason=request.adhoc_reason,
        purpose=request.purpose,
        patient=request.patient if isinstance(request, pb.DetokenizeRequest) else "",
    )


def _result(result: Result) -> pb.BatchDetokenizeResult:
    request_id, outcome = result
    if isinstance(outcome, GatewayError):
        return pb.BatchDetokenizeResult(status=rich_status(outcome, request_id))
    return pb.BatchDetokenizeResult(status=status_pb2.Status(code=0),
                                    response=_response(outcome, request_id))


def _response(disclosure: Disclosure, request_id: str) -> pb.DetokenizeResponse:
    return pb.DetokenizeResponse(
        token_id=disclosure.token_id,
        profile=disclosure.profile,
        reason=REASON_NUMBERS[disclosure.reason],
        request_id=request_id,
        fields=[
            pb.DisclosedField(
                name=f.name, value=f.value, disclosure=DISCLOSURE_NUMBERS[f.disclosure]
            )
            for f in disclosure.fields
        ],
    )
