"""Stage 7: the vault's detokenize call (Piiano Vault REST API), over piigate's own
keep-alive HTTP/1.1 connection pool (`piigate.vault.http1`).

`GET /api/pvlt/1.0/data/collections/{c}/tokens?reason=..&token_ids=..&props=..` takes a
list of token ids, so concurrent requests can be coalesced into one call later without
reshaping this stage. Lists are sent as repeated keys, as Piiano's generated clients do,
each value form-encoded exactly as aiohttp (yarl) encoded it before: letters, digits and
`_.-~!$'()*,/:?@` as they are, `+` for a space, `%XX` for every other byte of its UTF-8
(`&`, `=`, `+`, `#`, `%` among them; `form_value`). The headers are Host,
`Authorization: Bearer <the profile's key>`, `Accept: application/json`, the trace
context passed in and the proxy's own (`Route.headers`); redirects are not followed (a
3xx is just a status, below).

Reading the answer:

1. The body is read whole, however the network cuts it: exactly `Content-Length` bytes
   when declared, chunked as framed, else to the end of the stream, never more than
   `max_response_bytes` (a larger body, declared or found, is VAULT_RESPONSE_INVALID
   "response too large"). A head that is not HTTP/1.x, too large, or framed ambiguously
   (both `Content-Length` and `Transfer-Encoding`, two different lengths) is not a
   usable answer: VAULT_UNAVAILABLE, as one that is not HTTP at all (below).
2. A body that ends early (shorter than `Content-Length`, a reset connection, broken
   chunked framing) is VAULT_RESPONSE_INVALID: the vault answered, the answer is unusable.
   The call's timeout bounds connecting, sending, the head and the body (VAULT_TIMEOUT).
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
fails, and a proxy that refuses the tunnel) is VAULT_UNAVAILABLE; a warning names the
failure's type, nothing else. A request on a reused keep-alive connection that the vault
closed before answering is sent once more on a fresh connection, as aiohttp did for
idempotent requests (GET); nothing else is retried. TLS to the vault
(`piigate.vault.tls`, else the system's roots) and the proxy
(`piigate.transport.proxies`) are the vault's own; the JWKS, discovery and introspection
fetches stay on aiohttp, with their own session.

Every failure becomes a typed GatewayError; nothing from the vault's answer (which could
hold values) is ever put into an error, a log line or a metric.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import yarl

from piigate import strictjson
from piigate.errors import (
    VaultAccessDenied,
    VaultMisconfigured,
    VaultResponseInvalid,
    VaultTimeout,
    VaultUnavailable,
)
from piigate.transport.proxies import DIRECT_ROUTE, Route
from piigate.vault import http1
from piigate.vault.piiano import API_BASE
from piigate.vault.tls import VaultTls

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)
MAX_CUSTOM_AUDIT = 256
# What yarl leaves unescaped in a query value besides letters, digits and `_.-~`, which
# quote_plus always keeps (`form_value` is checked against yarl for every code point by
# tests/integration/test_vault_http1.py).
QUERY_SAFE = "!$'()*,/:?@"
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.~!$'()*,/:?@-]*")  # what needs no encoding
MAX_TARGETS = 256  # request-target prefixes kept, one per collection


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
    """Piiano Vault's detokenize over a keep-alive connection pool; `aclose` closes it."""

    def __init__(
        self,
        base_url: str,
        max_response_bytes: int,
        *,
        max_connections: int = 64,
        route: Route = DIRECT_ROUTE,
        tls: VaultTls | None = None,
    ):
        self._url = base_url.rstrip("/") + API_BASE + "/data/collections/{collection}/tokens"
        self._max_response_bytes = max_response_bytes
        # The route is chosen once: the vault's URL is fixed (its proxy, or none).
        self._pool = http1.Http1Pool(yarl.URL(base_url), max_connections, proxy=route.proxy,
                                     proxy_headers=route.proxy_headers)
        self._route_headers = route.headers
        self._tls = tls  # its context is read per request, so a reload applies to the next
        self._system_tls = ssl.create_default_context() if self._pool.tls and tls is None \
            else None  # fmt: skip
        self._targets: dict[str, str] = {}

    async def aclose(self) -> None:
        await self._pool.aclose()

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
        target = self._target(query.collection) + "&".join(
            f"{key}={form_value(value)}" for key, value in params)
        sent = {**(headers or {}), **self._route_headers,
                "Authorization": f"Bearer {query.api_key}", "Accept": "application/json"}
        context = self._tls.context if self._tls is not None else self._system_tls
        try:
            async with asyncio.timeout(max(timeout_s, 0.001)):
                status, body = await self._pool.get(
                    target, sent.items(), max_body_bytes=self._max_response_bytes,
                    ssl_context=context,
                )  # fmt: skip
        except TimeoutError as exc:
            raise VaultTimeout() from exc
        except http1.BodyInvalid as exc:
            raise VaultResponseInvalid({"detail": exc.detail}) from exc
        except http1.Unreachable as exc:
            cause = f" ({type(exc.__cause__).__name__})" if exc.__cause__ is not None else ""
            log.warning("vault unreachable: %s%s", type(exc).__name__, cause)
            raise VaultUnavailable() from exc
        if status != 200:
            raise _status_error(status, body)
        # By tags alone (no token ids), every token the vault selected was asked for.
        return _parse_answer(body, set(query.token_ids) if query.token_ids else None)

    def _target(self, collection: str) -> str:
        """The request target up to its query, the path encoded by yarl as aiohttp did."""
        prefix = self._targets.get(collection)
        if prefix is None:
            url = yarl.URL(self._url.format(collection=collection))
            query = url.raw_query_string
            prefix = f"{url.raw_path}?{query + '&' if query else ''}"
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            self._targets[collection] = prefix
        return prefix


def form_value(value: str) -> str:
    """A query value encoded exactly as yarl (aiohttp) encoded it; most need nothing."""
    return value if _PLAIN_VALUE.fullmatch(value) else quote_plus(value, safe=QUERY_SAFE)


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
