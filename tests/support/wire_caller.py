"""Test helper: a calling service that speaks the wire messages directly (grpc.aio), so a
test can set any request field (`actor_token`, `subject`, `purpose`, `patient`) whatever
the Python client offers, and reads failures back through the client's own translation
(`piigate_client.errors`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from piigate_client.errors import PiigateError, error_from_rpc, error_from_status
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc


@dataclass
class WireCaller:
    """One caller credential on one channel to `target`."""

    target: str
    credential: str
    timeout_s: float = 5.0
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)

    def _stub(self) -> pb_grpc.DetokenizationServiceStub:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return pb_grpc.DetokenizationServiceStub(self._channel)

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.credential}"),)

    async def detokenize(self, request: pb.DetokenizeRequest) -> pb.DetokenizeResponse:
        """The response, or the call's failure as a PiigateError (raised)."""
        try:
            response: pb.DetokenizeResponse = await self._stub().Detokenize(
                request, metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return response

    async def batch(self, request: pb.BatchDetokenizeRequest
                    ) -> list[pb.DetokenizeResponse | PiigateError]:
        """Each item's response or failure, in order; the call's own failure is raised."""
        try:
            answer: pb.BatchDetokenizeResponse = await self._stub().BatchDetokenize(
                request, metadata=self._metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return [r.response if r.status.code == 0 else error_from_status(r.status)
                for r in answer.results]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
