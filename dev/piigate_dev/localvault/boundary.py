"""The HTTP boundary: Piiano-shaped error bodies, JSON in and out, the error middleware.

The middleware is the one place where failures become answers: a VaultError becomes its
status and body; aiohttp's own 404/405/413 become the same shape; anything else is a
bare PV1000 500 whose log line names the exception type only (a message or traceback
could carry a value).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from piigate_dev.localvault.errors import (
    BodyTooLarge,
    InternalError,
    MethodNotAllowed,
    RequestInvalid,
    RouteNotFound,
    VaultError,
)
from piigate_dev.localvault.policy import ApiKey
from piigate_dev.localvault.vault import Vault

VAULT = web.AppKey("vault", Vault)
log = logging.getLogger("piigate_dev.localvault")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_HTTP_ERRORS: dict[int, type[VaultError]] = {
    404: RouteNotFound,
    405: MethodNotAllowed,
    413: BodyTooLarge,
}


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def answer(data: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(data, status=status, dumps=_dumps)


def error_response(error: VaultError) -> web.Response:
    """The Piiano-shaped answer for `error`."""
    return answer(error.body(), status=error.status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a Piiano-shaped answer; never a traceback."""
    try:
        return await handler(request)
    except VaultError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_HTTP_ERRORS.get(exc.status, RequestInvalid)())
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        log.error("local vault: internal error (%s)", type(exc).__name__)
        return error_response(InternalError())


async def read_json(request: web.Request) -> object:
    """The request body as JSON; PV1012 when it is not JSON, 413 when too large."""
    body = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RequestInvalid(field="<body>", problem="malformed JSON") from None


def vault_and_caller(request: web.Request) -> tuple[Vault, ApiKey]:
    """The vault and the authenticated key of this request (401 without one)."""
    vault = request.app[VAULT]
    return vault, vault.caller(request.headers.get("Authorization"))
