"""Fetching an issuer's documents (JWKS, OpenID configuration) over HTTP: the one place
the token stage touches the network.

Every fetch is bounded: connect, read and total timeouts (and an outer `asyncio.timeout`
at the total, so no fetch outlives it), a body cap, no redirects (a redirect could lead
anywhere), and https only unless the host is loopback. Failures are `FetchFailed` with a
short fixed code, never content. A fetch goes through the proxy the environment names for
its URL (`settings.proxies`, piigate.transport.proxies), or directly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
import yarl

from piigate.transport.addresses import is_loopback_host

if TYPE_CHECKING:
    from piigate.tokens.jwks import JwksCacheSettings


class FetchFailed(Exception):
    """A fetch attempt failed; `detail` is a short fixed code for status and logs."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def check_jwks_uri(jwks_uri: str) -> yarl.URL:
    """The URI, if it is absolute `https://` (or `http://` to a loopback host); else
    ValueError. Keys fetched in clear text from elsewhere could be swapped in transit."""
    try:
        url = yarl.URL(jwks_uri)
        host = url.host
    except (ValueError, IndexError, TypeError) as exc:  # yarl on odd authorities, e.g.
        raise ValueError("jwks_uri is not a URL") from exc  # "https://[::1]:x@/"
    if not url.is_absolute() or not host:
        raise ValueError("jwks_uri must be an absolute URL")
    if url.user is not None or url.password is not None:
        raise ValueError("jwks_uri must not carry credentials")
    if url.scheme == "https":
        return url
    if url.scheme == "http" and is_loopback_host(host):
        return url
    raise ValueError("jwks_uri must use https:// (http:// only to a loopback host)")


async def fetch_document(
    session: aiohttp.ClientSession, url: yarl.URL, settings: JwksCacheSettings, accept: str
) -> tuple[bytes, str | None]:
    """GET `url` within the settings' timeouts and size cap, refusing redirects; returns
    the body and its Cache-Control header, or raises FetchFailed with a short code."""
    client_timeout = aiohttp.ClientTimeout(
        total=settings.total_timeout_s,
        connect=settings.connect_timeout_s,
        sock_read=settings.read_timeout_s,
    )
    try:
        # The outer bound holds even where aiohttp's own timeouts would not (a peer that
        # trickles bytes, a resolver that hangs): a fetch never outlives total_timeout_s.
        async with asyncio.timeout(settings.total_timeout_s):
            return await _get(session, url, client_timeout, settings, accept)
    except TimeoutError as exc:
        raise FetchFailed("timeout") from exc
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"client_{type(exc).__name__}") from exc


async def _get(
    session: aiohttp.ClientSession,
    url: yarl.URL,
    client_timeout: aiohttp.ClientTimeout,
    settings: JwksCacheSettings,
    accept: str,
) -> tuple[bytes, str | None]:
    limit = settings.max_response_bytes
    route = settings.proxies.route(url)
    async with session.get(
        url,
        allow_redirects=False,  # a redirect could lead anywhere: refuse it
        timeout=client_timeout,
        headers={"Accept": accept, **route.headers},
        proxy=route.proxy,
        proxy_headers=route.proxy_headers,
    ) as response:
        return await read_answer(response, limit), response.headers.get("Cache-Control")


async def read_answer(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """A 200 answer's body, at most `limit` bytes (declared or as it arrives); else
    FetchFailed (`http_redirect_3xx`, `http_status_N`, `response_too_large`)."""
    if response.status != 200:
        kind = "redirect" if 300 <= response.status < 400 else "status"
        raise FetchFailed(f"http_{kind}_{response.status}")
    if response.content_length is not None and response.content_length > limit:
        raise FetchFailed("response_too_large")
    body = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        body += chunk
        if len(body) > limit:
            raise FetchFailed("response_too_large")
    return bytes(body)
