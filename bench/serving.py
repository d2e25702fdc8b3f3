"""Run a grpc.aio server as a benchmark child process: pick the event loop, announce the
port with `listening on HOST:PORT` (the convention `bench.stack.start_child` waits for),
serve until SIGTERM/SIGINT, then stop with a short grace."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc

LOOPS = ("asyncio", "uvloop")
GRACE_S = 1.0


def run(coroutine: Coroutine[Any, Any, None], loop: str) -> None:
    """Run `coroutine` on the named event loop (uvloop only when asked, imported lazily)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}")
    if loop == "uvloop":
        import uvloop

        uvloop.run(coroutine)
    else:
        asyncio.run(coroutine)


async def serve_until_signalled(
    server: grpc.aio.Server,
    listen: str,
    *,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Bind `listen`, start, announce the real port, wait for SIGTERM/SIGINT, stop."""
    port = server.add_insecure_port(listen)
    await server.start()
    host = listen.rpartition(":")[0]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{port}", flush=True)
    await stop.wait()
    await server.stop(GRACE_S)
    if on_stop is not None:
        await on_stop()
