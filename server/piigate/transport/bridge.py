"""grpc's thread-pool server in front of the asyncio pipeline.

piigate serves gRPC with the synchronous `grpc.server(ThreadPoolExecutor)`: on this
machine it costs about a third less CPU per call than grpc.aio for the same handler, and
because calls reach the pipeline from many threads at once, concurrent calls of one shape
meet in the coalescer and share vault calls (README "Performance"; `make bench` measures
both models). The pipeline's I/O (vault, key sets, audit) stays asyncio, on one event loop
in the main thread.

Each handler thread reads what the call is (request, metadata, deadline, peer
certificate) into a frozen `piigate.pipeline.Call`, hands it to that loop (`LoopHandoff`)
and waits, GIL released, for what comes back: a response, or the `grpc.Status` the
boundary (`piigate.transport.boundary`) chose, which it applies.

`LoopHandoff` is hand-written rather than `asyncio.run_coroutine_threadsafe`, which builds
a `concurrent.futures.Future` (a `threading.Condition` and its lock) per call, chains it to
the task with two callbacks, and wakes the loop once per call. Here each call is one raw
lock the handler thread blocks on, and the calls handed over while the loop is busy share
one wake-up: measured on this machine (a loop thread and trivial coroutines), 45-60 -> 40
µs of CPU per round trip from one thread and 20-32 -> 14-19 µs from 16.
Beyond that:

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

import _thread
import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

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


class Handed(Generic[T]):
    """One coroutine handed to the loop: its task once started there, and its outcome.

    The handler thread blocks on `_done` (a raw lock, acquired at birth) until the loop
    releases it with the outcome set; `cancel` may come from any thread. `on_end` runs on
    the loop once the call has ended, started or not (a task cancelled before its first
    step never runs its coroutine at all)."""

    __slots__ = ("_coroutine", "_done", "_loop", "_on_end", "_task",
                 "cancelled", "error", "result")

    def __init__(self, coroutine: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop,
                 on_end: Callable[[], None] | None) -> None:
        self._coroutine = coroutine
        self._loop = loop
        self._on_end = on_end
        self._task: asyncio.Task[T] | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: T | None = None

    def wait(self, timeout_s: float) -> bool:
        """Block (GIL released) until the outcome is set; False if `timeout_s` passed."""
        return self._done.acquire(timeout=timeout_s)

    def cancel(self) -> None:
        """From any thread: stop the work (a no-op once it ended, or the loop is gone)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs there
            self._loop.call_soon_threadsafe(self._cancel_on_loop)

    # On the loop:

    def _start(self) -> None:
        if self.cancelled:  # cancelled before it started: it never will
            self._coroutine.close()
            self._end()
            return
        task = self._task = self._loop.create_task(self._coroutine)
        task.add_done_callback(self._finished)

    def _cancel_on_loop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        else:
            self.cancelled = True  # `_start`, still to come, ends it

    def _finished(self, task: asyncio.Task[T]) -> None:
        if task.cancelled():
            self.cancelled = True
        elif (error := task.exception()) is not None:
            self.error = error
        else:
            self.result = task.result()
        self._end()

    def _end(self) -> None:
        if self._on_end is not None:
            self._on_end()
        self._done.release()


class LoopHandoff:
    """Hands coroutines from any thread to one event loop; the calls handed over while a
    wake-up is pending ride on it (one `call_soon_threadsafe` for all of them)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: deque[Handed[Any]] = deque()
        self._mutex = threading.Lock()
        self._wake_pending = False

    def submit(self, coroutine: Coroutine[Any, Any, T],
               on_end: Callable[[], None] | None = None) -> Handed[T]:
        """Start `coroutine` on the loop soon; RuntimeError (the coroutine closed) if the
        loop is closed."""
        handed = Handed(coroutine, self._loop, on_end)
        with self._mutex:
            self._pending.append(handed)
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._start_pending)
            except RuntimeError:  # the loop is closed: nothing handed over will start
                with self._mutex:
                    stranded, self._pending = self._pending, deque()
                    self._wake_pending = False
                for other in stranded:
                    if other is not handed:
                        other.cancelled = True
                        other._start()  # closes it and releases its waiter
                coroutine.close()
                raise
        return handed

    def _start_pending(self) -> None:
        with self._mutex:
            pending, self._pending = self._pending, deque()
            self._wake_pending = False
        for handed in pending:
            handed._start()


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
        self._handoff = LoopHandoff(loop)
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
        load = self._load
        try:
            if load is None:
                handed = self._handoff.submit(method(call))
            else:
                ticket = load.handed_over()
                handed = self._handoff.submit(
                    # Leaves the queue as it starts, or at its end if it never started.
                    _counted(load, ticket, method, call), lambda: load.left_queue(ticket))
        except RuntimeError:  # the loop is closed: the gateway is shutting down
            if load is not None:
                load.left_queue(ticket)
            return internal(request_id)
        context.add_callback(handed.cancel)  # the client went away: stop the work too
        if not handed.wait(self._wait_s):
            handed.cancel()
            log.error("a call overran its budget on the event loop; answered INTERNAL",
                      extra={"request_id": request_id})
            return internal(request_id)
        if handed.cancelled:
            return internal(request_id)  # cancelled because the client left: nobody reads it
        if handed.error is not None:  # answer() answers everything else; belt and braces
            log.error("unexpected %s in the bridge; answered INTERNAL",
                      type(handed.error).__name__, extra={"request_id": request_id})
            return internal(request_id)
        return handed.result  # set: neither cancelled nor failed


async def _counted(load: CallLoad, ticket: list[None], method: Method[T],
                   call: Call) -> T | grpc.Status:
    load.left_queue(ticket)
    load.started()
    try:
        return await method(call)
    finally:
        load.finished()


def call_of(request: Request, context: grpc.ServicerContext) -> Call:
    """What the pipeline is told of a call, read from its grpc context."""
    remaining = context.time_remaining()
    return describe(
        request,
        tuple(context.invocation_metadata() or ()),
        remaining if remaining is not None and remaining < NO_DEADLINE_S else None,
        peer_identity(context.auth_context()),
    )
