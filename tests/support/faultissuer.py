"""Test helper: an identity provider's discovery and JWKS endpoints on 127.0.0.1:0 that fail
in the ways real networks do, one mode per endpoint, switchable at any time.

    async with running_fault_issuer(KEY) as issuer:
        issuer.set_mode("hang", only="jwks")   # discovery still answers
        ...
        issuer.release()                       # hung requests answer now (as "ok")

Modes:
- `ok`: the discovery document (`issuer` = `issuer_url`, `jwks_uri` = `jwks_url`) or the
  JWKS of `keys` plus `extra_entries` (raw JWK dicts: `oct` keys, private keys, ...),
  with `Cache-Control: max-age=<max_age_s>`.
- `hang`: accepts the connection and the request, never answers until `release()` (or
  the issuer stops); `hung` counts the requests held now.
- `slow`: answers as `ok` after `slow_s` seconds.
- `garbage`: 200 with a body that is not JSON.
- `nested`: 200 with JSON nested `nesting` levels deep (Python's json gives up with a
  RecursionError long before that), well under the 64 KiB body cap.
- `refused`: nothing listens on the port (connections are refused); switching back to
  any other mode listens on the same port again.

Every request is counted per path in `hits`; connections are never kept alive. Only
loopback; every wait is bounded by `release()` or the issuer's shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.support.jwt_factory import KeyPair, jwks

Mode = Literal["ok", "hang", "slow", "garbage", "nested", "refused"]
Endpoint = Literal["discovery", "jwks"]
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
HOST = "127.0.0.1"


@dataclass
class FaultIssuer:
    keys: list[KeyPair]
    extra_entries: list[dict[str, Any]] = field(default_factory=list)
    max_age_s: int = 300
    slow_s: float = 0.5
    nesting: int = 20_000
    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    hung: int = 0
    _modes: dict[str, Mode] = field(default_factory=lambda: {"discovery": "ok", "jwks": "ok"})
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def issuer_url(self) -> str:
        """The issuer identifier (discovery lives below it)."""
        return self.base_url + "/"

    @property
    def jwks_url(self) -> str:
        return self.base_url + JWKS_PATH

    def mode(self, endpoint: Endpoint) -> Mode:
        return self._modes[endpoint]

    async def set_mode(self, mode: Mode, *, only: Endpoint | None = None) -> None:
        """Switch both endpoints (or `only` one) to `mode`; `refused` closes the listener
        (both endpoints then refuse), any other mode reopens it on the same port."""
        for endpoint in (only,) if only else ("discovery", "jwks"):
            self._modes[endpoint] = mode
        refusing = "refused" in self._modes.values()
        if refusing and self._site is not None:
            await self._site.stop()
            self._site = None
        elif not refusing and self._site is None:
            await self._listen()

    def release(self) -> None:
        """Let every hung request answer (as `ok`); later `hang` requests hang again
        only after `set_mode("hang")` is called anew."""
        self._release.set()

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await site.start()
        self._site = site
        if self.port == 0:
            self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await self._answer(request)
        # No keep-alive: every request opens its own connection, so `refused` refuses
        # it rather than reusing a pooled connection opened before the switch.
        response.force_close()
        return response

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] += 1
        endpoint: Endpoint
        if path == DISCOVERY_PATH:
            endpoint = "discovery"
        elif path == JWKS_PATH:
            endpoint = "jwks"
        else:
            return web.Response(status=404)
        mode = self._modes[endpoint]
        if mode == "hang":
            self.hung += 1
            try:
                await self._release.wait()
            finally:
                self.hung -= 1
        elif mode == "slow":
            await asyncio.sleep(self.slow_s)
        elif mode == "garbage":
            return web.Response(body=b"\x00\xff<html>not json", content_type="application/json")
        elif mode == "nested":
            depth = self.nesting
            return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")
        if endpoint == "discovery":
            document: dict[str, Any] = {"issuer": self.issuer_url, "jwks_uri": self.jwks_url}
            return web.json_response(document)
        body = jwks(*self.keys)
        body["keys"].extend(self.extra_entries)
        return web.Response(
            text=json.dumps(body),
            content_type="application/json",
            headers={"Cache-Control": f"max-age={self.max_age_s}"},
        )


@asynccontextmanager
async def running_fault_issuer(*keys: KeyPair) -> AsyncIterator[FaultIssuer]:
    issuer = FaultIssuer(list(keys))
    app = web.Application()
    app.router.add_get("/{tail:.*}", issuer._handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    issuer._runner = runner
    await issuer._listen()
    try:
        yield issuer
    finally:
        issuer.release()  # hung handlers answer, so shutdown does not wait on them
        await runner.cleanup()
