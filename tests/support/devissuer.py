"""Test helper: the real dev issuer, in-process, on 127.0.0.1 and a free port.

    async with running_dev_issuer() as idp:
        token = await idp.user_token(sub="user-1", pii_token="tok-1", audience="piigate")
        keys = await idp.jwks()

Every convenience method goes through the real HTTP endpoints; `idp.signer` is the
in-process `DevIssuer` for tests that want to skip the round trip.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import aiohttp
from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate_dev.devissuer.api import ISSUER_KEY, create_issuer_app
from piigate_dev.devissuer.config import DEV_CLIENT_ID, DEV_CLIENT_SECRET, IssuerConfig
from piigate_dev.devissuer.service import Clock, DevIssuer


class IssuerRefused(Exception):
    """The issuer answered an error: `status` and the OAuth `error` code."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('error_description')}")
        self.status = status
        self.error = body.get("error")
        self.body = body


@dataclass
class DevIssuerHandle:
    """A running issuer: where it is, what it calls itself, and shortcuts to its endpoints."""

    base_url: str  # http://127.0.0.1:PORT
    issuer: str  # http://127.0.0.1:PORT/ (the iss claim)
    app: web.Application
    http: aiohttp.ClientSession

    @property
    def jwks_uri(self) -> str:
        return self.base_url + "/.well-known/jwks.json"

    @property
    def signer(self) -> DevIssuer:
        return self.app[ISSUER_KEY]

    async def user_token(
        self,
        sub: str = "user-1",
        pii_token: str | None = None,
        audience: str | Sequence[str] | None = None,
        **fields: Any,
    ) -> str:
        """`POST /dev/users/token`; `fields` are the other body fields (scope, azp, ...)."""
        body: dict[str, Any] = {"sub": sub, **fields}
        if pii_token is not None:
            body["pii_token"] = pii_token
        if audience is not None:
            body["audience"] = audience if isinstance(audience, str) else list(audience)
        answer = await self.post_json("/dev/users/token", body)
        return str(answer["access_token"])

    async def client_token(
        self,
        client_id: str = DEV_CLIENT_ID,
        secret: str = DEV_CLIENT_SECRET,
        audience: str = "piigate",
        scope: str | None = None,
    ) -> str:
        """`POST /oauth/token` (client credentials, HTTP Basic auth)."""
        form = {"grant_type": "client_credentials", "audience": audience}
        if scope is not None:
            form["scope"] = scope
        # RFC 6749 §2.3.1: each half is form-urlencoded before base64.
        auth = {
            "Authorization": aiohttp.encode_basic_auth(quote_plus(client_id), quote_plus(secret))
        }
        async with self.http.post(self.base_url + "/oauth/token", data=form, headers=auth) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise IssuerRefused(resp.status, answer)
        return str(answer["access_token"])

    async def jwks(self) -> dict[str, Any]:
        """The published key set."""
        return await self.get_json("/.well-known/jwks.json")

    async def rotate(self) -> str:
        """Rotate keys; returns the new current kid."""
        return str((await self.post_json("/dev/keys/rotate", None))["kid"])

    async def retire(self) -> list[str]:
        """Retire every non-current key; returns the retired kids."""
        return list((await self.post_json("/dev/keys/retire", None))["retired"])

    async def get_json(self, path: str) -> dict[str, Any]:
        async with self.http.get(self.base_url + path) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = await resp.json()
            return answer

    async def post_json(self, path: str, body: object) -> dict[str, Any]:
        async with self.http.post(self.base_url + path, json=body) as resp:
            answer: dict[str, Any] = await resp.json()
            if resp.status != 200:
                raise IssuerRefused(resp.status, answer)
            return answer


@asynccontextmanager
async def running_dev_issuer(
    config: IssuerConfig | None = None, clock: Clock = time.time
) -> AsyncIterator[DevIssuerHandle]:
    """Start the real issuer on 127.0.0.1:0 and stop it on exit."""
    app = await create_issuer_app(config, clock)
    runner, base_url = await start_http_app(app, ListenAddress("127.0.0.1", 0))
    try:
        app[ISSUER_KEY].bind_base_url(base_url)
        async with aiohttp.ClientSession() as http:
            yield DevIssuerHandle(base_url, app[ISSUER_KEY].issuer, app, http)
    finally:
        await runner.cleanup()
