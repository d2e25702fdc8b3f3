"""The two gRPC server models, side by side: grpc.aio and the thread-pool server.

    python -m bench.server_models echo-threads --listen 127.0.0.1:0 [--threads 64]
    python -m bench.server_models piigate-aio --config gateway.toml --listen 127.0.0.1:0

- `echo-threads`: `bench.echo_server`'s canned answer under grpc's synchronous
  `grpc.server(ThreadPoolExecutor)`, the model piigate serves with: that model's ceiling,
  beside grpc.aio's (`bench.echo_server`).
- `piigate-aio`: piigate's own pipeline (`piigate.bootstrap.build_parts`, the same config
  as `piigate serve`) served by grpc.aio instead, the service on the event loop with no
  bridge: the model piigate does not use, kept so the choice stays measurable.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from bench import serving
from bench.echo_server import CANNED
from piigate.bootstrap import build_parts, server_options
from piigate.config import load_config
from piigate.transport.bridge import call_of
from piigate.transport.service import DetokenizationService
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc


class ThreadedEcho(pb_grpc.DetokenizationServiceServicer):
    def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.ServicerContext
    ) -> pb.DetokenizeResponse:
        return CANNED


def serve_echo_threads(listen: str, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_DetokenizationServiceServicer_to_server(ThreadedEcho(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(listen)
    server.start()
    print(f"listening on {listen.rpartition(':')[0]}:{port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(serving.GRACE_S).wait()


class AioService(pb_grpc.DetokenizationServiceServicer):
    """piigate's service under grpc.aio: the call read from the aio context, the status
    applied with its abort."""

    def __init__(self, service: DetokenizationService) -> None:
        self._service = service

    async def Detokenize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer(await self._service.detokenize(call_of(request, context)), context)

    async def BatchDetokenize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await _answer(await self._service.batch_detokenize(call_of(request, context)),
                             context)


async def _answer(answer: Any, context: grpc.aio.ServicerContext) -> Any:
    if isinstance(answer, grpc.Status):
        await context.abort_with_status(answer)
    return answer


async def serve_piigate_aio(config_path: Path, listen: str) -> None:
    config = load_config(config_path)
    parts = build_parts(config)
    for source in parts.sources.values():
        await source.prime()  # announce the port only once the keys are in
    server = grpc.aio.server(
        options=server_options(config), maximum_concurrent_rpcs=config.server.max_concurrent_rpcs
    )
    service = AioService(DetokenizationService(parts.pipeline))
    pb_grpc.add_DetokenizationServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    await serving.serve_until_signalled(server, listen, on_stop=parts.aclose)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("echo-threads", "piigate-aio"))
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--config", type=Path, help="piigate's gateway TOML (piigate-aio)")
    parser.add_argument("--threads", type=int, default=256, help="echo-threads' handler threads")
    parser.add_argument("--loop", choices=serving.LOOPS, default="uvloop")
    args = parser.parse_args()
    if not 1 <= args.threads <= 1024:
        parser.error("--threads must be 1..1024")
    if args.kind == "echo-threads":
        serve_echo_threads(args.listen, args.threads)
    elif args.config is None:
        parser.error("piigate-aio needs --config")
    else:
        serving.run(serve_piigate_aio(args.config, args.listen), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
