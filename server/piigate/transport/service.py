"""The gRPC adapter: wire messages in, pipeline, wire messages out.

Translation only; every decision is made in the stages behind the pipeline. It runs on
the pipeline's event loop; `piigate.transport.bridge` hands it each call from grpc's handler
threads.
"""

from __future__ import annotations

from google.rpc import status_pb2

from piigate.errors import BatchTooLarge, GatewayError, RequestInvalid
from piigate.identity.peer import peer_identity
from piigate.pipeline import DetokenizationPipeline, Disclosure
from piigate.policy.decision import DisclosureRequest
from piigate.transport.boundary import CallContext, guarded, rich_status
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from piigate_client.wire import DISCLOSURE_NUMBERS, REASON_NAMES, REASON_NUMBERS

# With no client deadline grpc reports ~9.2e18 s remaining; treat anything this large
# as "no deadline" so the server-side budget applies.
NO_DEADLINE_S = 1e9


class DetokenizationService(pb_grpc.DetokenizationServiceServicer):
    """`piigate.v1.DetokenizationService`."""

    def __init__(self, pipeline: DetokenizationPipeline, max_batch_size: int) -> None:
        self._pipeline = pipeline
        self._max_batch_size = max_batch_size

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: CallContext
    ) -> pb.DetokenizeResponse:
        return await guarded(context, self._detokenize(request, context))

    async def _detokenize(
        self, request: pb.DetokenizeRequest, context: CallContext
    ) -> pb.DetokenizeResponse:
        disclosure = await self._pipeline.detokenize(
            metadata=tuple(context.invocation_metadata() or ()),
            subject_token=request.subject_token,
            request=_disclosure_request(request),
            time_remaining_s=_remaining(context),
            peer=peer_identity(context.auth_context()),
        )
        return _response(disclosure)

    async def BatchDetokenize(
        self, request: pb.BatchDetokenizeRequest, context: CallContext
    ) -> pb.BatchDetokenizeResponse:
        return await guarded(context, self._batch(request, context))

    async def _batch(
        self, request: pb.BatchDetokenizeRequest, context: CallContext
    ) -> pb.BatchDetokenizeResponse:
        if not request.subject_tokens:
            raise RequestInvalid({"detail": "no subject tokens"})
        if len(request.subject_tokens) > self._max_batch_size:
            raise BatchTooLarge({"max": str(self._max_batch_size)})
        outcomes = await self._pipeline.detokenize_many(
            metadata=tuple(context.invocation_metadata() or ()),
            subject_tokens=tuple(request.subject_tokens),
            request=_disclosure_request(request),
            time_remaining_s=_remaining(context),
            peer=peer_identity(context.auth_context()),
        )
        return pb.BatchDetokenizeResponse(results=[_result(o) for o in outcomes])


def _remaining(context: CallContext) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < NO_DEADLINE_S else None


def _result(outcome: Disclosure | GatewayError) -> pb.BatchDetokenizeResult:
    if isinstance(outcome, GatewayError):
        return pb.BatchDetokenizeResult(status=rich_status(outcome))
    return pb.BatchDetokenizeResult(status=status_pb2.Status(code=0), response=_response(outcome))


def _disclosure_request(
    request: pb.DetokenizeRequest | pb.BatchDetokenizeRequest,
) -> DisclosureRequest:
    reason: str | None = None
    if request.reason != pb.REASON_UNSPECIFIED:
        # An unknown enum number passes through as a name no profile allows, so the
        # decision stage refuses it and the refusal is audited like any other.
        reason = REASON_NAMES.get(request.reason, f"unknown reason {int(request.reason)}")
    return DisclosureRequest(
        fields=tuple(request.fields), reason=reason, adhoc_reason=request.adhoc_reason
    )


def _response(disclosure: Disclosure) -> pb.DetokenizeResponse:
    return pb.DetokenizeResponse(
        token_id=disclosure.token_id,
        profile=disclosure.profile,
        reason=REASON_NUMBERS[disclosure.reason],
        fields=[
            pb.DisclosedField(
                name=f.name, value=f.value, disclosure=DISCLOSURE_NUMBERS[f.disclosure]
            )
            for f in disclosure.fields
        ],
    )
