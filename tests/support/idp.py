"""Test helper: a stand-in identity provider's key endpoints, on loopback, that a test can
break on purpose (down, slow, redirecting, oversized, wrong issuer in discovery).

It publishes the public half of test keys at every JWKS path the presets derive
(`/.well-known/jwks.json`, `/protocol/openid-connect/certs`, `/v1/keys`, `/jwks`) and the
discovery document at `/.well-known/openid-configuration` below any issuer path, so one
server can play Auth0, Keycloak, Cognito or Okta.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from tests.support.jwt_factory import KeyPair, jwks

JWKS_SUFFIXES = ("/.well-known/jwks.json", "/protocol/openid-connect/certs", "/v1/keys", "/jwks")


@dataclass
class FakeIdp:
    base_url: str
    keys: list[KeyPair]
    mode: str = "ok"  # ok | down | slow | redirect | huge | wrong-issuer
    jwks_fetches: int = 0
    paths: list[str] = field(default_factory=list)

    def issuer(self, path: str = "/") -> str:
        return self.base_url + path


@asynccontextmanager
async def running_fake_idp(*keys: KeyPair) -> AsyncIterator[FakeIdp]:
    idp = FakeIdp("", list(keys))

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        idp.paths.append(path)
        if idp.mode == "down":
            return web.Response(status=503)
        if idp.mode == "slow":
            await asyncio.sleep(5)
        if idp.mode == "redirect":
            raise web.HTTPFound("http://127.0.0.2:9/jwks")
        if path.endswith("/.well-known/openid-configuration"):
            issuer = idp.base_url + path.removesuffix(".well-known/openid-configuration")
            if idp.mode == "wrong-issuer":
                issuer = "https://somebody-else.example/"
            document = {"issuer": issuer, "jwks_uri": issuer.rstrip("/") + "/jwks"}
            return web.json_response(document)
        if path.endswith(JWKS_SUFFIXES):
            idp.jwks_fetches += 1
            body: dict[str, Any] = jwks(*idp.keys)
            if idp.mode == "huge":
                body["padding"] = "x" * 200_000
            return web.Response(text=json.dumps(body), content_type="application/json",
                                headers={"Cache-Control": "max-age=300"})
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner, url = await start_http_app(app, ListenAddress("127.0.0.1", 0))
    idp.base_url = url
    try:
        yield idp
    finally:
        await runner.cleanup()
