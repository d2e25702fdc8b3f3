"""The other server model, measured: grpc's synchronous thread-pool server.

    python -m bench.threaded echo    --listen 127.0.0.1:0 [--threads 16]
    python -m bench.threaded piigate --config gateway.toml --listen 127.0.0.1:0 [--threads 16]

`echo` is `bench.echo_server`'s canned answer under `grpc.server(ThreadPoolExecutor)`: the
thread-pool model's own ceiling. `piigate` runs piigate's real pipeline (`build_parts`,
the same config as `piigate serve`) under that server: each handler thread hands its call
to the pipeline's event loop (`asyncio.run_coroutine_threadsafe`) and waits for the
answer, because the pipeline's I/O (vault, key sets, audit fsync) is asyncio. Errors
become statuses through piigate's own boundary. Benchmark-only: `piigate serve` runs
grpc.aio, the model chosen by this measurement (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc

from bench import serving
from bench.echo_server import CANNED
from piigate.bootstrap import GatewayParts, build_parts, server_options
from piigate.config import load_config
from piigate.service import DetokenizationService
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

T = TypeVar("T")


class ThreadedEcho(pb_grpc.DetokenizationServiceServicer):
    def Detokenize(  # type: ignore[override]
        self, request: pb.DetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.DetokenizeResponse:
        return CANNED


class _Aborted(Exception):
    def __init__(self, status: grpc.Status) -> None:
        self.status = status


class _LoopSideContext:
    """What piigate's async service reads from its context, taken from the sync one;
    `abort_with_status` travels back to the handler thread as an exception."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    async def abort_with_status(self, status: grpc.Status) -> None:
        raise _Aborted(status)


class ThreadedPiigate(pb_grpc.DetokenizationServiceServicer):
    """Handler threads bridged to the pipeline's event loop."""

    def __init__(self, service: DetokenizationService, loop: asyncio.AbstractEventLoop) -> None:
        self._service = service
        self._loop = loop

    def _bridge(
        self,
        method: Callable[[Any, Any], Awaitable[T]],
        request: Any,
        context: grpc.ServicerContext,
    ) -> T:
        call = asyncio.run_coroutine_threadsafe(
            method(request, _LoopSideContext(context)),  # type: ignore[arg-type]
            self._loop,
        )
        context.add_callback(call.cancel)  # the client went away: stop the pipeline too
        try:
            return call.result()
        except _Aborted as exc:
            context.abort_with_status(exc.status)
            raise AssertionError("abort_with_status returned") from exc

    def Detokenize(  # type: ignore[override]
        self, request: pb.DetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.DetokenizeResponse:
        return self._bridge(self._service.Detokenize, request, context)

    def BatchDetokenize(  # type: ignore[override]
        self, request: pb.BatchDetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.BatchDetokenizeResponse:
        return self._bridge(self._service.BatchDetokenize, request, context)


def _start(server: grpc.Server, listen: str) -> None:
    port = server.add_insecure_port(listen)
    server.start()
    print(f"listening on {listen.rpartition(':')[0]}:{port}", flush=True)


async def serve_piigate(config_path: Path, listen: str, threads: int) -> None:
    config = load_config(config_path)
    parts: GatewayParts = build_parts(config)
    for source in parts.sources.values():
        await source.key_for(None)  # serve only once the keys are in, like `piigate serve`
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads),
        options=server_options(config),
        maximum_concurrent_rpcs=config.server.max_concurrent_rpcs,
    )
    service = DetokenizationService(parts.pipeline, config.server.max_batch_size)
    pb_grpc.add_DetokenizationServiceServicer_to_server(
        ThreadedPiigate(service, asyncio.get_running_loop()), server
    )
    _start(server, listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.to_thread(server.stop(serving.GRACE_S).wait)
    await parts.aclose()


def serve_echo(listen: str, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_DetokenizationServiceServicer_to_server(ThreadedEcho(), server)  # type: ignore[abstract]
    _start(server, listen)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(serving.GRACE_S).wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo", "piigate"))
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--config", type=Path, help="piigate's gateway TOML (kind piigate)")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--loop", choices=serving.LOOPS, default="uvloop")
    args = parser.parse_args()
    if not 1 <= args.threads <= 256:
        parser.error("--threads must be 1..256")
    if args.kind == "echo":
        serve_echo(args.listen, args.threads)
    elif args.config is None:
        parser.error("piigate needs --config")
    else:
        serving.run(serve_piigate(args.config, args.listen, args.threads), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
