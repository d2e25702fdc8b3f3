"""Caller credentials: an OAuth 2.0 client-credentials token (RFC 6749 §4.4), fetched,
cached and refreshed before it expires.

`ClientCredentials` serves both clients from one cache:

- called (`credential()`), as `DetokenizationClient` does, it blocks its thread for the
  token request when the cached token is stale;
- awaited (`await credential.token_async()`), as `AsyncDetokenizationClient` does by
  itself, the token request runs in a worker thread (`asyncio.to_thread`), so the event
  loop keeps serving; concurrent awaiters on one loop share one request.

The client authenticates to the token endpoint with `client_secret_basic` (a plain secret
string, the default), `ClientSecretPost(secret)` or `PrivateKeyJwt(pem, ...)` (see
`piigate_client.client_auth`). The HTTP is the standard library's (`urllib`), so the
client package stays light: no redirects are followed (a secret is never re-sent
elsewhere), the answer is capped at 64 KiB, each request is bounded by `timeout_s`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from piigate_client.client_auth import ClientAuthentication, ClientSecretBasic

REFRESH_MARGIN_S = 30.0
MAX_RESPONSE_BYTES = 64 * 1024


class TokenEndpointError(Exception):
    """The token endpoint refused (`error` is its OAuth error code, RFC 6749 §5.2), was
    unreachable, or answered something that is not a token. Never holds a secret."""

    def __init__(self, status: int | None, error: str) -> None:
        super().__init__(f"token endpoint answered {status or 'nothing'}: {error}")
        self.status = status
        self.error = error


class ClientCredentials:
    """Fetches `grant_type=client_credentials` tokens from `token_url` and caches each
    until `REFRESH_MARGIN_S` (or half its lifetime) before it expires. Thread-safe."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | ClientAuthentication,
        audience: str,
        scope: str | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        scheme = urllib.parse.urlsplit(token_url).scheme
        if scheme not in ("http", "https"):
            raise ValueError("token_url must be an http(s) URL")
        self._token_url = token_url
        self._client_id = client_id
        self._auth: ClientAuthentication = (
            ClientSecretBasic(client_secret) if isinstance(client_secret, str) else client_secret
        )
        self._audience = audience
        self._scope = scope
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        return (
            f"ClientCredentials(client_id={self._client_id!r}, audience={self._audience!r}, "
            f"method={self._auth.method!r})"
        )

    def __call__(self) -> str:
        """The current token; blocks this thread while a new one is fetched."""
        with self._lock:
            cached = self._cached()
            if cached is not None:
                return cached
            token, lifetime = self._fetch()
            self._token = token
            self._refresh_at = self._clock() + max(lifetime - REFRESH_MARGIN_S, lifetime / 2)
            return token

    async def token_async(self) -> str:
        """The current token, without blocking the event loop: a fresh one is fetched in a
        worker thread, and awaiters on this loop wait for that one fetch."""
        cached = self._cached()
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        lock = self._loop_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            cached = self._cached()
            if cached is not None:  # fetched while this awaiter queued
                return cached
            token: str = await asyncio.to_thread(self.__call__)
            return token

    def _cached(self) -> str | None:
        token = self._token
        return token if token is not None and self._clock() < self._refresh_at else None

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "audience": self._audience}
        if self._scope:
            form["scope"] = self._scope
        headers, auth_form = self._auth.authenticate(self._client_id, self._token_url)
        status, body = _post_form(
            self._token_url, {**form, **auth_form}, headers, self._timeout_s
        )
        return _token_from_answer(status, body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: the credentials would otherwise go where it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post_form(
    url: str, form: Mapping[str, str], headers: Mapping[str, str], timeout_s: float
) -> tuple[int, bytes]:
    """POST an application/x-www-form-urlencoded body; (status, at most 64 KiB of body).
    The one place urllib's errors become `TokenEndpointError`."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            **headers,
        },
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return int(response.status), response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:  # 4xx/5xx, redirects included: read the error
        with exc:
            return int(exc.code), exc.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError) as exc:
        raise TokenEndpointError(None, "unreachable") from exc


def _token_from_answer(status: int, body: bytes) -> tuple[str, float]:
    if len(body) > MAX_RESPONSE_BYTES:
        raise TokenEndpointError(status, "response_too_large")
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TokenEndpointError(status, "response_not_json")
    if status != 200:
        error = answer.get("error")
        raise TokenEndpointError(status, error if isinstance(error, str) else "http_error")
    token, lifetime = answer.get("access_token"), answer.get("expires_in", 300)
    if (
        not isinstance(token, str) or not token
        or isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0
    ):
        raise TokenEndpointError(status, "no_access_token")
    return token, float(lifetime)
