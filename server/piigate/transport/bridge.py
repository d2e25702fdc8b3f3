"""grpc's thread-pool server in front of the asyncio pipeline.

piigate serves gRPC with the synchronous `grpc.server(ThreadPoolExecutor)`: on this
machine it costs about a third less CPU per call than grpc.aio for the same handler, and
because calls reach the pipeline from many threads at once, concurrent calls of one shape
meet in the coalescer and share vault calls (README "Performance"; `make bench` measures
both models). The pipeline's I/O (vault, key sets, audit) stays asyncio, on one event loop
in the main thread.

Each handler thread reads what the call is (request, metadata, deadline, peer
certificate) into a frozen `piigate.pipeline.Call`, hands it to that loop
(`asyncio.run_coroutine_threadsafe`) and waits, GIL released, for what comes back: a
response, or the `grpc.Status` the boundary (`piigate.transport.boundary`) chose, which
it applies. Beyond that:

- a client that goes away cancels the call on the loop too (its audit event is still
  written: `piigate.pipeline`);
- anything else (the loop gone at shutdown, the pipeline overrunning its own budget, a
  cancelled call) is a bare INTERNAL: no exception text ever reaches the wire, which grpc
  would otherwise send as the details of an UNKNOWN status;
- it counts the calls handed to the loop and not yet started there (queued) and those
  started and not yet answered (in flight): `piigate.telemetry.metrics.CallLoad`;
- every answer to a call it could read carries the call's request id in the
  `piigate-request-id` trailer (and an error's ErrorInfo: `piigate.transport.boundary`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc

from piigate.identity.peer import peer_identity
from piigate.pipeline import Call
from piigate.telemetry.metrics import CallLoad
from piigate.transport.boundary import INTERNAL, REQUEST_ID_TRAILER, internal
from piigate.transport.service import DetokenizationService, Request, describe
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

# Beyond the request budget, how long a handler thread waits before it gives up on the
# loop: the pipeline bounds every step itself, so reaching this means the loop is stuck.
OVERRUN_MARGIN_S = 2.0

# With no client deadline grpc reports ~9.2e18 s remaining; treat anything this large
# as "no deadline" so the server-side budget applies.
NO_DEADLINE_S = 1e9

Method = Callable[[Call], Coroutine[Any, Any, "T | grpc.Status"]]


class BridgedService(pb_grpc.DetokenizationServiceServicer):
    """`piigate.v1.DetokenizationService` for the thread-pool server."""

    def __init__(
        self,
        service: DetokenizationService,
        loop: asyncio.AbstractEventLoop,
        request_timeout_s: float,
        load: CallLoad | None = None,
    ) -> None:
        self._service = service
        self._loop = loop
        self._wait_s = request_timeout_s + OVERRUN_MARGIN_S
        self._load = load

    def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.DetokenizeResponse:
        response: pb.DetokenizeResponse = self._call(self._service.detokenize, request, context)
        return response

    def BatchDetokenize(
        self, request: pb.BatchDetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetokenizeResponse:
        response: pb.BatchDetokenizeResponse = self._call(
            self._service.batch_detokenize, request, context)
        return response

    def _call(self, method: Method[T], request: Request, context: grpc.ServicerContext) -> T:
        answer: T | grpc.Status = self._run(method, request, context)
        if isinstance(answer, grpc.Status):
            context.abort_with_status(answer)  # raises; grpc ends the call with `answer`
            raise AssertionError("abort_with_status returned")  # pragma: no cover
        return answer

    def _run(
        self, method: Method[T], request: Request, context: grpc.ServicerContext
    ) -> T | grpc.Status:
        """The answer, or the status to end the call with."""
        try:
            call = call_of(request, context)
        except Exception as exc:  # a context grpc could not read: never the caller's text
            log.error("unexpected %s reading the call; answered INTERNAL", type(exc).__name__)
            return INTERNAL
        request_id = call.request_id
        # The answer's trailer; an error status replaces it with its own, which holds it too.
        context.set_trailing_metadata(((REQUEST_ID_TRAILER, request_id),))
        coroutine, ticket = self._hand_over(method, call)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop is closed: the gateway is shutting down
            coroutine.close()
            self._never_started(ticket)
            return internal(request_id)
        if ticket is not None:  # a call cancelled before it started leaves the queue too
            future.add_done_callback(lambda _: self._never_started(ticket))
        context.add_callback(future.cancel)  # the client went away: stop the work too
        try:
            result: T | grpc.Status = future.result(timeout=self._wait_s)
            return result
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.error("a call overran its budget on the event loop; answered INTERNAL",
                      extra={"request_id": request_id})
            return internal(request_id)
        except concurrent.futures.CancelledError:
            return internal(request_id)  # cancelled because the client left: nobody reads it
        except Exception as exc:  # answer() answers everything else; belt and braces
            log.error("unexpected %s in the bridge; answered INTERNAL", type(exc).__name__,
                      extra={"request_id": request_id})
            return internal(request_id)


    def _hand_over(
        self, method: Method[T], call: Call
    ) -> tuple[Coroutine[Any, Any, T | grpc.Status], list[None] | None]:
        """The coroutine to run on the loop and, when counting, the call's queue ticket."""
        load = self._load
        if load is None:
            return method(call), None
        ticket = load.handed_over()
        return self._counted(load, ticket, method, call), ticket

    @staticmethod
    async def _counted(load: CallLoad, ticket: list[None], method: Method[T],
                       call: Call) -> T | grpc.Status:
        load.left_queue(ticket)
        load.started()
        try:
            return await method(call)
        finally:
            load.finished()

    def _never_started(self, ticket: list[None] | None) -> None:
        if self._load is not None and ticket is not None:
            self._load.left_queue(ticket)  # a no-op once the call started


def call_of(request: Request, context: grpc.ServicerContext) -> Call:
    """What the pipeline is told of a call, read from its grpc context."""
    remaining = context.time_remaining()
    return describe(
        request,
        tuple(context.invocation_metadata() or ()),
        remaining if remaining is not None and remaining < NO_DEADLINE_S else None,
        peer_identity(context.auth_context()),
    )
