"""grpc's thread-pool server in front of the asyncio pipeline.

piigate serves gRPC with the synchronous `grpc.server(ThreadPoolExecutor)`: on this
machine it costs about a third less CPU per call than grpc.aio for the same handler, and
because calls reach the pipeline from many threads at once, concurrent calls of one shape
meet in the coalescer and share vault calls (README "Performance"; `make bench` measures
both models). The pipeline's I/O (vault, key sets, audit) stays asyncio, on one event loop
in the main thread.

Each handler thread hands its call to that loop (`asyncio.run_coroutine_threadsafe`)
and waits, GIL released, for the answer:

- the service's context is a `LoopSideContext`: what it reads (metadata, deadline, peer
  certificate) comes from the call's own context; its `abort_with_status` comes back to
  the handler thread as `_Aborted` and is applied there, so the one boundary
  (`piigate.transport.boundary`) still decides every status;
- a client that goes away cancels the call on the loop too;
- anything else (the loop gone at shutdown, the pipeline overrunning its own budget, a
  cancelled call) is a bare INTERNAL: no exception text ever reaches the wire, which grpc
  would otherwise send as the details of an UNKNOWN status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc

from piigate.transport.boundary import INTERNAL
from piigate.transport.service import DetokenizationService
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")

# Beyond the request budget, how long a handler thread waits before it gives up on the
# loop: the pipeline bounds every step itself, so reaching this means the loop is stuck.
OVERRUN_MARGIN_S = 2.0


class _Aborted(Exception):
    """The service ended the call with `status` (raised on the loop, applied in the
    handler thread)."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__()
        self.status = status


class LoopSideContext:
    """The `piigate.transport.boundary.CallContext` the service sees on the event loop."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        metadata: Sequence[tuple[str, str | bytes]] | None = self._context.invocation_metadata()
        return metadata

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    def auth_context(self) -> Any:
        return self._context.auth_context()

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise _Aborted(status)


class BridgedService(pb_grpc.DetokenizationServiceServicer):
    """`piigate.v1.DetokenizationService` for the thread-pool server."""

    def __init__(
        self,
        service: DetokenizationService,
        loop: asyncio.AbstractEventLoop,
        request_timeout_s: float,
    ) -> None:
        self._service = service
        self._loop = loop
        self._wait_s = request_timeout_s + OVERRUN_MARGIN_S

    def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.DetokenizeResponse:
        return self._call(self._service.Detokenize, request, context)

    def BatchDetokenize(
        self, request: pb.BatchDetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetokenizeResponse:
        return self._call(self._service.BatchDetokenize, request, context)

    def _call(
        self,
        method: Callable[[Any, LoopSideContext], Coroutine[Any, Any, T]],
        request: Any,
        context: grpc.ServicerContext,
    ) -> T:
        status = self._run(method, request, context)
        if isinstance(status, grpc.Status):
            context.abort_with_status(status)  # raises; grpc ends the call with `status`
            raise AssertionError("abort_with_status returned")  # pragma: no cover
        return status

    def _run(
        self,
        method: Callable[[Any, LoopSideContext], Coroutine[Any, Any, T]],
        request: Any,
        context: grpc.ServicerContext,
    ) -> T | grpc.Status:
        """The answer, or the status to end the call with."""
        coroutine = method(request, LoopSideContext(context))
        try:
            call = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        except RuntimeError:  # the loop is closed: the gateway is shutting down
            coroutine.close()
            return INTERNAL
        context.add_callback(call.cancel)  # the client went away: stop the work too
        try:
            return call.result(timeout=self._wait_s)
        except _Aborted as aborted:
            return aborted.status
        except concurrent.futures.TimeoutError:
            call.cancel()
            log.error("a call overran its budget on the event loop; answered INTERNAL")
            return INTERNAL
        except concurrent.futures.CancelledError:
            return INTERNAL  # cancelled because the client left: nobody reads this
        except Exception as exc:  # guarded() answers everything else; belt and braces
            log.error("unexpected %s in the bridge; answered INTERNAL", type(exc).__name__)
            return INTERNAL
