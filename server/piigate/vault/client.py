"""Stage 7: the vault's detokenize call (Piiano Vault REST API), over one pooled aiohttp
session.

`GET /api/pvlt/1.0/data/collections/{c}/tokens?reason=..&token_ids=..&props=..` takes a
list of token ids, so concurrent requests can be coalesced into one call later without
reshaping this stage. Lists are sent as repeated keys, as Piiano's generated clients do.

Reading the answer:

1. The body is read whole, however the network cuts it: exactly `Content-Length` bytes
   when declared, else to the end of the stream, never more than `max_response_bytes`
   (a larger body, declared or found, is VAULT_RESPONSE_INVALID "response too large").
2. A body that ends early (shorter than `Content-Length`, a reset connection, broken
   chunked framing) is VAULT_RESPONSE_INVALID: the vault answered, the answer is unusable.
   A body that stalls is bounded by the call's timeout (VAULT_TIMEOUT), like the headers.
3. Every JSON body, answers and error bodies alike, is read by `piigate.strictjson`
   (duplicate member names, non-standard constants and nesting deeper than its limit are
   refused). An answer that is not strict JSON is VAULT_RESPONSE_INVALID; an error body
   that is not is merely an error without a Piiano `error_code`.
4. The answer's shape is `[{"token_id": .., "fields": {..}}, ...]`; anything else is
   refused as a whole, and so is a record for a token id nobody asked for.
5. The same token id twice: identical records (same `fields`) are accepted as one, since
   they cannot disclose anything a single one would not; records that differ are a vault
   contradicting itself, and the whole answer is refused (VAULT_RESPONSE_INVALID), rather
   than letting the last one win.

Statuses: 403 is VAULT_ACCESS_DENIED (the vault's own policy); 400, 401, 404, 405, 409,
413 and 414 are VAULT_MISCONFIGURED (piigate's key, collection or request is wrong); 504
and Piiano's `PV1009` (its 30 s request timeout) are VAULT_TIMEOUT, because a gateway in
front of the vault, or the vault itself, gave up waiting: the same condition as our own
budget running out, so a caller retries it the same way; 429, every other 5xx and any
other status are VAULT_UNAVAILABLE. A connection that cannot be made or that breaks
before the answer's head (including an answer that is not HTTP, a TLS handshake that
fails, and a proxy that refuses the tunnel) is VAULT_UNAVAILABLE. TLS to the vault
(`piigate.vault.tls`) and the proxy (`piigate.transport.proxies`) are the vault's own:
the JWKS fetches sharing the session keep the system's roots.

Every failure becomes a typed GatewayError; nothing from the vault's answer (which could
hold values) is ever put into an error, a log line or a metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from piigate import strictjson
from piigate.errors import (
    VaultAccessDenied,
    VaultMisconfigured,
    VaultResponseInvalid,
    VaultTimeout,
    VaultUnavailable,
)
from piigate.transport.proxies import DIRECT_ROUTE, Route
from piigate.vault.piiano import API_BASE
from piigate.vault.tls import VaultTls

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)
MAX_CUSTOM_AUDIT = 256


@dataclass(frozen=True, slots=True)
class DetokenizeQuery:
    """One detokenize call: every field but `token_ids` must match to share a call."""

    collection: str
    token_ids: tuple[str, ...]
    props: tuple[str, ...]
    reason: str
    adhoc_reason: str | None
    api_key: str
    tags: tuple[str, ...] = ()
    custom_audit: str | None = None
    # The operator's purpose (a ticket reference), appended to custom_audit; part of the
    # shape, so calls of different purposes never share one vault call and one audit text.
    purpose: str | None = None
    # The vault spans of the items this call serves (piigate.telemetry.tracing); empty
    # when tracing is off. Not part of the call's shape.
    trace: tuple[SpanContext, ...] = field(default=(), compare=False)

    def __repr__(self) -> str:  # never print the key
        return f"DetokenizeQuery(collection={self.collection!r}, n={len(self.token_ids)})"


class VaultClient:
    """Piiano Vault's detokenize over a keep-alive connection pool."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        max_response_bytes: int,
        *,
        route: Route = DIRECT_ROUTE,
        tls: VaultTls | None = None,
    ):
        self._session = session
        self._url = base_url.rstrip("/") + API_BASE + "/data/collections/{collection}/tokens"
        self._max_response_bytes = max_response_bytes
        self._route = route  # chosen once: the vault's URL is fixed (its proxy, or none)
        self._tls = tls  # its context is read per request, so a reload applies to the next

    async def detokenize(
        self, query: DetokenizeQuery, timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Mapping[str, Any]]:
        """Fields per token id for the ids the vault knows; unknown ids are absent.
        `headers` (trace context) go out beside piigate's own, never instead of them."""
        params: list[tuple[str, str]] = [("reason", query.reason)]
        if query.adhoc_reason:
            params.append(("adhoc_reason", query.adhoc_reason))
        custom_audit = " ".join(filter(None, (
            query.custom_audit, f"purpose {query.purpose}" if query.purpose else None)))
        if custom_audit:
            params.append(("custom_audit", custom_audit[:MAX_CUSTOM_AUDIT]))
        params += [("token_ids", t) for t in query.token_ids]
        params += [("props", p) for p in query.props]
        params += [("tags", t) for t in query.tags]
        url = self._url.format(collection=query.collection)
        sent = {**(headers or {}), **self._route.headers,
                "Authorization": f"Bearer {query.api_key}", "Accept": "application/json"}
        try:
            async with self._session.get(
                url,
                params=params,
                headers=sent,
                timeout=aiohttp.ClientTimeout(total=max(timeout_s, 0.001)),
                allow_redirects=False,
                proxy=self._route.proxy,
                proxy_headers=self._route.proxy_headers,
                ssl=self._tls.context if self._tls is not None else True,
            ) as response:
                body = await self._read(response)
                status = response.status
        except TimeoutError as exc:
            raise VaultTimeout() from exc
        except aiohttp.ClientError as exc:
            log.warning("vault unreachable: %s", type(exc).__name__)
            raise VaultUnavailable() from exc
        if status != 200:
            raise _status_error(status, body)
        # By tags alone (no token ids), every token the vault selected was asked for.
        return _parse_answer(body, set(query.token_ids) if query.token_ids else None)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body (rules 1 and 2); the total timeout bounds every wait in here."""
        cap = self._max_response_bytes
        declared = response.content_length
        if declared is not None and declared > cap:
            raise VaultResponseInvalid({"detail": "response too large"})
        try:
            if declared is not None:
                return await response.content.readexactly(declared)
            return await _read_to_end(response.content, cap)
        except (asyncio.IncompleteReadError, aiohttp.ClientPayloadError) as exc:
            raise VaultResponseInvalid({"detail": "response ended early"}) from exc


async def _read_to_end(content: aiohttp.StreamReader, cap: int) -> bytes:
    """A body without Content-Length (chunked, or up to the close), refused past `cap`.
    Each round takes at least one byte, so the loop ends within `cap + 1` rounds."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > cap:
            raise VaultResponseInvalid({"detail": "response too large"})
        chunks.append(chunk)
    return b"".join(chunks)


def _status_error(status: int, body: bytes) -> Exception:
    code = _error_code(body)
    meta = {"vault_status": str(status), **({"vault_error_code": code} if code else {})}
    log.warning("vault answered %d %s", status, code or "")
    if status == 403:
        return VaultAccessDenied(meta)  # the vault's own policy refused this read
    if status in (400, 401, 404, 405, 409, 413, 414):
        return VaultMisconfigured(meta)  # piigate's key, collection or request is wrong
    if status == 504 or code == "PV1009":
        return VaultTimeout(meta)  # a gateway before the vault, or the vault, gave up waiting
    return VaultUnavailable(meta)  # 429, every other 5xx and anything unforeseen


def _error_code(body: bytes) -> str | None:
    """Piiano's `error_code` (PVxxxx) if the body is Piiano-shaped; nothing else is read."""
    try:
        document = strictjson.loads(body)
    except ValueError:
        return None
    code = document.get("error_code") if isinstance(document, dict) else None
    if isinstance(code, str) and code.startswith("PV") and code[2:].isdigit() and len(code) <= 8:
        return code
    return None


def _parse_answer(body: bytes, asked: set[str] | None) -> dict[str, Mapping[str, Any]]:
    """`[{"token_id": .., "fields": {..}}, ...]` → fields by token id (rules 3 to 5);
    anything else in the shape is garbage and refused as a whole."""
    try:
        items = strictjson.loads(body)
    except strictjson.NestingTooDeep as exc:
        raise VaultResponseInvalid({"detail": "nesting too deep"}) from exc
    except strictjson.DuplicateMember as exc:
        raise VaultResponseInvalid({"detail": "duplicate member"}) from exc
    except ValueError as exc:
        raise VaultResponseInvalid({"detail": "not JSON"}) from exc
    if not isinstance(items, list):
        raise VaultResponseInvalid({"detail": "not a list"})
    out: dict[str, Mapping[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict):
            raise VaultResponseInvalid({"detail": "item not an object"})
        token_id, fields = item.get("token_id"), item.get("fields")
        if not isinstance(token_id, str) or not isinstance(fields, dict):
            raise VaultResponseInvalid({"detail": "item without token_id or fields"})
        if asked is not None and token_id not in asked:
            # Never hand out a record that was not asked for, whatever the vault sent.
            raise VaultResponseInvalid({"detail": "unrequested token"})
        kept = out.setdefault(token_id, fields)
        if kept is not fields and kept != fields:
            raise VaultResponseInvalid({"detail": "conflicting duplicate token"})
    return out
