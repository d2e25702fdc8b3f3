"""Run an aiohttp application until SIGTERM/SIGINT: the edge shared by the development
stand-ins (`piigate-dev local-vault`, `piigate-dev dev-issuer`)."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from piigate.transport.addresses import ListenAddress


async def start_http_app(
    app: web.Application, listen: ListenAddress, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Start `app` on `listen` (over TLS with `ssl_context`) and return its runner and
    base URL (with the real port)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, listen.host, listen.port, reuse_address=True,
                       ssl_context=ssl_context)
    await site.start()
    port = int(runner.addresses[0][1])  # the real port when 0 was asked for
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://{host}:{port}"


def run_http_app(
    make_app: Callable[[], Awaitable[web.Application]],
    listen: ListenAddress,
) -> int:
    """Serve until SIGTERM or SIGINT, print `listening on URL` once accepting, exit 0."""

    async def _serve() -> None:
        app = await make_app()
        runner, url = await start_http_app(app, listen)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"listening on {url}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(_serve())
    print("stopped", file=sys.stderr, flush=True)
    return 0
