"""Caller credentials: an OAuth 2.0 client-credentials token, fetched and refreshed.

`ClientCredentials` is a callable returning a current access token, which is what the
clients take as `credential`, so tokens refresh without the caller doing anything.
Standard library only, so the client package stays light.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

REFRESH_MARGIN_S = 30.0


class ClientCredentials:
    """Fetches `grant_type=client_credentials` tokens from `token_url` and caches each
    until shortly before it expires. Thread-safe."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
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
        self._client_secret = client_secret
        self._audience = audience
        self._scope = scope
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self._client_id!r}, audience={self._audience!r})"

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._refresh_at:
                self._token, lifetime = self._fetch()
                self._refresh_at = self._clock() + max(lifetime - REFRESH_MARGIN_S, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "audience": self._audience}
        if self._scope:
            form["scope"] = self._scope
        basic = base64.b64encode(f"{self._client_id}:{self._client_secret}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self._token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
            body = json.loads(response.read(64 * 1024))
        token, lifetime = body.get("access_token"), body.get("expires_in", 300)
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise ValueError("token endpoint answered without an access_token")
        return token, float(lifetime)
