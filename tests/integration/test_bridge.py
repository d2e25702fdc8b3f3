"""The thread-pool server's bridge to the event loop, through a real grpc server on
loopback: answers and statuses cross it intact, nothing else does (no exception text on
the wire), a client that leaves cancels the work on the loop, and a stuck loop or a closed
one still gets the caller a prompt INTERNAL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from piigate.errors import ScopeMissing
from piigate.pipeline import Call
from piigate.transport import bridge
from piigate.transport.boundary import answer
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

SECRET = "123-45-6789 canary-bridge"
GUARD_S = 10.0  # bounds every wait in these tests; no assertion depends on it


@dataclass
class FakeService:
    """Stands in for `piigate.transport.service.DetokenizationService` on the loop side."""

    behaviour: Callable[[Call], Awaitable[pb.DetokenizeResponse | grpc.Status]]
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def detokenize(self, call: Call) -> pb.DetokenizeResponse | grpc.Status:
        self.started.set()
        try:
            return await self.behaviour(call)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def batch_detokenize(self, call: Call) -> pb.BatchDetokenizeResponse:
        return pb.BatchDetokenizeResponse()


@dataclass
class Served:
    target: str
    service: FakeService

    async def call(self, deadline_s: float = GUARD_S) -> pb.DetokenizeResponse:
        """One Detokenize from a client thread (the loop must stay free to serve it)."""

        def blocking() -> pb.DetokenizeResponse:
            with grpc.insecure_channel(self.target) as channel:
                stub = pb_grpc.DetokenizationServiceStub(channel)
                request = pb.DetokenizeRequest(subject_token="t")
                answer: pb.DetokenizeResponse = stub.Detokenize(
                    request, timeout=deadline_s, metadata=[("x-probe", "p")]
                )
                return answer

        return await asyncio.wait_for(asyncio.to_thread(blocking), GUARD_S)


async def _answer(call: Call) -> pb.DetokenizeResponse:
    metadata = dict(call.metadata)
    return pb.DetokenizeResponse(token_id=str(metadata.get("x-probe")),
                                 profile=call.subject_tokens[0])


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Served]]:
    servers: list[grpc.Server] = []

    def start(
        behaviour: Callable[[Call], Awaitable[pb.DetokenizeResponse | grpc.Status]] = _answer,
        request_timeout_s: float = 3.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Served:
        service = FakeService(behaviour)
        server = grpc.server(
            futures.ThreadPoolExecutor(4), options=[("grpc.so_reuseport", 0)]
        )
        bridged = bridge.BridgedService(
            service,  # type: ignore[arg-type]  # a stand-in with the same two methods
            loop or asyncio.get_running_loop(),
            request_timeout_s,
        )
        pb_grpc.add_DetokenizationServiceServicer_to_server(bridged, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return Served(f"127.0.0.1:{port}", service)

    yield start
    for server in servers:
        await asyncio.to_thread(server.stop(0).wait, GUARD_S)


async def test_an_answer_crosses_with_the_calls_own_metadata(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    answer = await served.call()
    assert (answer.token_id, answer.profile) == ("p", "t")  # the metadata, the request


async def test_the_boundarys_status_crosses_intact(serve: Callable[..., Served]) -> None:
    async def refuse(call: Call) -> pb.DetokenizeResponse | grpc.Status:
        async def failing() -> pb.DetokenizeResponse:
            raise ScopeMissing({"profile": "support"})

        return await answer(failing(), call.request_id)

    served = serve(refuse)
    with pytest.raises(grpc.RpcError) as caught:
        await served.call()
    error = caught.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("SCOPE_MISSING", "piigate")
    trailers = dict(error.trailing_metadata())  # type: ignore[attr-defined]
    assert info.metadata["request_id"] == trailers["piigate-request-id"]
    assert len(info.metadata["request_id"]) == 32


async def test_an_unexpected_exception_is_a_bare_internal_without_its_text(
    serve: Callable[..., Served],
) -> None:
    async def explode(call: Call) -> pb.DetokenizeResponse:
        raise RuntimeError(f"value was {SECRET}")  # not through answer(): the bridge's net

    served = serve(explode)
    with pytest.raises(grpc.RpcError) as caught:
        await served.call()
    error = caught.value
    assert error.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert SECRET not in (error.details() or "")  # type: ignore[attr-defined]
    assert "RuntimeError" not in (error.details() or "")  # type: ignore[attr-defined]
    for _, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        assert SECRET.encode() not in (value if isinstance(value, bytes) else value.encode())


async def test_a_client_that_leaves_cancels_the_work_on_the_loop(
    serve: Callable[..., Served],
) -> None:
    async def linger(call: Call) -> pb.DetokenizeResponse:
        await asyncio.sleep(GUARD_S)
        return pb.DetokenizeResponse()

    # The bridge's own bound (request budget + margin) lies past GUARD_S, so only the
    # client's departure can explain a cancellation seen within GUARD_S.
    served = serve(linger, request_timeout_s=2 * GUARD_S)
    with pytest.raises(grpc.RpcError) as caught:
        await served.call(deadline_s=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    await asyncio.wait_for(served.service.cancelled.wait(), GUARD_S)


async def test_a_stuck_loop_side_call_is_given_up_with_internal(
    serve: Callable[..., Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bridge, "OVERRUN_MARGIN_S", 0.0)

    async def hang(call: Call) -> pb.DetokenizeResponse:
        await asyncio.sleep(GUARD_S)
        return pb.DetokenizeResponse()

    served = serve(hang, request_timeout_s=0.2)
    with pytest.raises(grpc.RpcError) as caught:
        await served.call()  # no client deadline: only the bridge's bound ends it
    assert caught.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    await asyncio.wait_for(served.service.cancelled.wait(), GUARD_S)


async def test_a_closed_loop_answers_internal(serve: Callable[..., Served]) -> None:
    closed = asyncio.new_event_loop()
    closed.close()
    served = serve(loop=closed)
    with pytest.raises(grpc.RpcError) as caught:
        await served.call()
    assert caught.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert not served.service.started.is_set()
