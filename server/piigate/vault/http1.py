"""The vault's HTTP transport: a strict HTTP/1.1 keep-alive client on asyncio protocols,
with `httptools` (llhttp, Node.js's parser) reading every answer.

Only what `piigate.vault.client` needs: GET to one origin, directly, through an http://
forward proxy (absolute-form requests), or through a CONNECT tunnel with TLS end to end
(RFC 9110 §9.3.6, RFC 9112 §3.2). `AnswerReader` turns an answer's bytes into
(status, body) and does no I/O (it is what `tests/fuzz/targets/vault_http1.py` fuzzes);
`Http1Pool` holds the connections and writes the requests: `GET target HTTP/1.1`, Host,
then the caller's headers as given; a header name that is not a token or a value with a
line break or NUL is a ValueError, never sent (as aiohttp refused them).

Hand-written because the HTTP client was most of the vault call's own cost.
`python -m bench.vault_clients` (client CPU per request at 1 / 16 concurrent, uvloop,
against the local vault) measured aiohttp at 102 / 84 µs, pycurl's multi interface on
the loop at 66 / 44, pyreqwest (Rust, its own runtime) at 73 / 53, and this design's
candidate (`bench/h1client.py`) at 39 / 27 µs; this module itself (the `http1` candidate there,
query encoding, header checks and all its rules included) costs 41 / 34 µs where aiohttp
costs 85 / 72 µs in the same runs, and a whole `VaultClient.detokenize`, strict JSON read
included, 55 / 44 µs. No library offers asyncio HTTP/1.1 at that cost; llhttp does the
parsing, this module only frames, limits and pools.

Reading an answer (`AnswerReader`):

1. The head (status line, headers, any 1xx interim answers before it) ends within
   `max_head_bytes` and `max_headers` headers (trailers count too); llhttp refuses
   anything that is not HTTP/1.x (bare LF, obs-fold, invalid characters), and this reader
   a status below 100 and control characters in the reason phrase, which llhttp lets
   through. A broken head, a 101 or a head breaking rule 2 is `HeadRefused`.
2. Framing (RFC 9112 §6, the request smuggling rules): `Content-Length` digits only, and
   a second one must not differ; `Transfer-Encoding` only as exactly one `chunked`; both
   together are refused. llhttp is stricter still (any duplicate Content-Length).
3. The body is `Content-Length` bytes, chunked (llhttp decodes it) or everything up to a
   clean close; never more than `max_body_bytes` (`TooLarge`, declared or found). At most
   `max_head_bytes` may arrive in a row without a byte of body (chunk framing,
   extensions, trailers): also `TooLarge`.
4. A body that ends early (short of its length, a reset, broken chunked framing) is
   `EndedEarly`; a connection that ends before the head's end is `ConnectionClosed`.

The pool (`Http1Pool`):

5. At most `max_connections` connections; a caller beyond that waits for one (the
   caller's own timeout bounds the wait, like everything else). Idle ones are reused
   most recently used first, one request at a time each (no pipelining), and closed
   after `idle_timeout_s` idle (aiohttp's keep-alive timeout, 15 s).
6. A connection goes back to the pool only if its answer was complete, did not say
   `Connection: close` (or HTTP/1.0 without keep-alive), and nothing followed it. Any
   error, timeout or cancellation closes the connection: one in an unknown state is
   never reused. Bytes arriving on an idle connection close it.
7. A request on a reused idle connection that the server closed before sending any byte
   of the answer is sent once more on a fresh connection (RFC 9112 §9.3.1: GET is
   idempotent; aiohttp does the same for idempotent requests). Never twice, never on a
   fresh connection, never after a byte of the answer.
8. TLS: the context is given per request and each connection keeps the one it was
   opened with; when the context changes (a reload), idle connections of the old one are
   closed and new ones take the new one. SNI and name checks use the URL's host.
9. Connecting resolves names with the system resolver, cached `dns_ttl_s` (aiohttp's
   `ttl_dns_cache=300`), and races the addresses with Happy Eyeballs (RFC 8305, 250 ms,
   `aiohappyeyeballs`, as aiohttp does). A failure to connect, resolve, handshake or be
   tunnelled is `ConnectFailed` / `TunnelRefused`.

Errors: `Unreachable` (nobody usable answered: the caller's VAULT_UNAVAILABLE) and
`BodyInvalid` with its `detail` (the answer was unusable: VAULT_RESPONSE_INVALID). No
error carries a byte of the answer. Timeouts are the caller's (`asyncio.timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import re
import socket
import ssl
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

import aiohappyeyeballs
import httptools
import yarl


class Http1Error(Exception):
    """Base of this transport's failures."""


class Unreachable(Http1Error):
    """No usable answer: the vault could not be reached or did not speak HTTP."""


class ConnectFailed(Unreachable):
    """Resolving, connecting or the TLS handshake failed (the cause is chained)."""


class TunnelRefused(Unreachable):
    """The proxy answered CONNECT with something other than 200."""


class ConnectionClosed(Unreachable):
    """The connection ended before the answer's head did."""


class HeadRefused(Unreachable):
    """The answer's head is not HTTP/1.x or breaks a rule (1, 2)."""


class PoolClosed(Unreachable):
    """The pool was closed (the gateway is stopping)."""


class BodyInvalid(Http1Error):
    """The vault answered, but its body is unusable; `detail` says which rule."""

    detail = "response invalid"


class TooLarge(BodyInvalid):
    detail = "response too large"


class EndedEarly(BodyInvalid):
    detail = "response ended early"


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one answer and one pool may hold (rules 1, 3, 5 and 9)."""

    max_head_bytes: int = 32 * 1024
    max_headers: int = 128  # aiohttp's default
    idle_timeout_s: float = 15.0
    dns_ttl_s: float = 300.0
    happy_eyeballs_delay_s: float = 0.25


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    reusable: bool  # complete, keep-alive, nothing after it (rule 6)


class AnswerReader:
    """One answer, read from its bytes as they arrive (rules 1 to 4); one per request.

    `feed` returns the Answer once it is complete (and keeps returning it), `end` is the
    connection's end. Both raise only the errors above."""

    def __init__(self, max_body_bytes: int, limits: Limits = Limits(), *,
                 head_only: bool = False) -> None:  # fmt: skip
        self._parser = httptools.HttpResponseParser(self)
        self._cap = max_body_bytes
        self._limits = limits
        self._head_only = head_only  # a CONNECT's answer: the head, then the tunnel
        self.started = False  # a byte of the answer arrived (rule 7)
        self.answer: Answer | None = None
        self._extra = False  # bytes after the answer
        self._failure: Http1Error | None = None
        self._head_bytes = 0
        self._quiet = 0  # bytes fed in a row since the last byte of body (rule 3)
        self._headers = 0
        self._length: int | None = None
        self._chunked = False
        self._in_body = False  # the final head is complete
        self._status = 0
        self._keep_alive = False
        self._body: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> Answer | None:
        if not data:
            return self.answer
        self.started = True
        if self.answer is not None:
            self._after_answer()
            return self.answer
        if self._in_body:
            self._feed_body(data)
        else:
            room = self._limits.max_head_bytes - self._head_bytes
            head = data if len(data) <= room else data[:room]
            self._head_bytes += len(head)
            self._execute(head)
            if len(head) < len(data):
                if not self._in_body and self.answer is None:
                    raise HeadRefused("head too large")
                self.feed(data[len(head):])
        return self.answer

    def end(self, clean: bool) -> Answer:
        """The connection ended (`clean`: an orderly close, not a reset or TLS error)."""
        if self.answer is not None:
            return self.answer
        if not self._in_body:
            raise ConnectionClosed("closed before the answer's head ended")
        if clean and self._length is None and not self._chunked:
            # Read to the close (RFC 9112 §6.3, rule 3): the close is the body's end.
            self.answer = Answer(self._status, b"".join(self._body), reusable=False)
            return self.answer
        raise EndedEarly("closed before the body's end")

    def _feed_body(self, data: bytes) -> None:
        size = self._size
        self._execute(data)
        if self.answer is None:
            self._quiet = 0 if self._size > size else self._quiet + len(data)
            if self._quiet > self._limits.max_head_bytes:
                raise TooLarge("too much framing without body")

    def _execute(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            failure, self._failure = self._failure, None
            if self.answer is not None:  # a second answer, or garbage after the first
                self._after_answer()
                return
            if failure is not None:
                raise failure from None
            if self._in_body:  # chunked framing llhttp could not read
                raise EndedEarly("broken chunked framing") from None
            raise HeadRefused("not HTTP/1.x") from exc

    def _after_answer(self) -> None:
        """Bytes after the complete answer: it stands, its connection is not reused."""
        self._extra = True
        if self.answer is not None and self.answer.reusable:
            self.answer = dataclasses.replace(self.answer, reusable=False)

    def _fail(self, failure: Http1Error) -> None:
        """Stop llhttp from a callback; `_execute` raises `failure` itself."""
        self._failure = failure
        raise failure

    # httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.answer is not None:
            raise HeadRefused("a second answer")  # `_execute` sees the answer: extra

    def on_status(self, reason: bytes) -> None:
        # llhttp lets control characters through here (RFC 9112 §4 allows none).
        if _BAD_REASON.search(reason):
            self._fail(HeadRefused("control characters in the reason phrase"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self._limits.max_headers:
            self._fail(HeadRefused("too many headers"))
        if self._in_body or self._head_only:
            return  # a trailer (counted, never read), or a tunnel's head
        key = name.lower()
        if key == b"content-length":
            text = value.strip(b" \t")
            if not text.isdigit():  # bytes: ASCII digits only
                self._fail(HeadRefused("bad Content-Length"))
            length = int(text)
            if self._length is not None and self._length != length:
                self._fail(HeadRefused("conflicting Content-Length"))
            self._length = length
        elif key == b"transfer-encoding":
            if self._chunked or value.strip(b" \t").lower() != b"chunked":
                self._fail(HeadRefused("Transfer-Encoding other than one chunked"))
            self._chunked = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 100:  # llhttp reads any three digits; RFC 9110 §15 starts at 100
            self._fail(HeadRefused("status below 100"))
        if status < 200:
            if status == 101:
                self._fail(HeadRefused("upgrade"))  # never asked for
            return  # an interim answer (RFC 9110 §15.2): the final one follows
        if self._head_only:
            self.answer = Answer(status, b"", reusable=False)
            return
        if self._length is not None and self._chunked:
            self._fail(HeadRefused("both Content-Length and Transfer-Encoding"))
        if self._length is not None and self._length > self._cap:
            self._fail(TooLarge("declared too large"))
        self._status = status
        self._keep_alive = self._parser.should_keep_alive()
        self._in_body = True

    def on_body(self, body: bytes) -> None:
        if self._head_only:
            self._extra = True  # the proxy spoke before the TLS handshake
            return
        self._size += len(body)
        if self._size > self._cap:
            self._fail(TooLarge("body too large"))
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self.answer is not None:
            return  # a tunnel's head (llhttp reads on into a body it does not have)
        if not self._in_body:  # an interim answer ended: its framing is not the answer's
            self._length, self._chunked = None, False
            return
        self.answer = Answer(self._status, b"".join(self._body), self._keep_alive)

    @property
    def tunnel_spoke_early(self) -> bool:
        return self._extra


_BAD_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # not HTAB, SP, VCHAR, obs-text


class _Connection(asyncio.Protocol):
    """One connection's protocol: the bytes of the current request's answer go to its
    reader; bytes at any other time, or any refusal, close the connection (rule 6)."""

    def __init__(self, pool: Http1Pool, context: ssl.SSLContext | None) -> None:
        self.pool = pool
        self.context = context  # what it was opened with (rule 8)
        self.transport: asyncio.Transport | None = None
        self.reader: AnswerReader | None = None
        self.waiter: asyncio.Future[Answer] | None = None
        self.lost = False
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pool._open.add(self)

    def data_received(self, data: bytes) -> None:
        reader, waiter = self.reader, self.waiter
        if reader is None or waiter is None or waiter.done():
            self.abort()  # bytes outside an answer
            return
        try:
            answer = reader.feed(data)
        except Http1Error as exc:
            waiter.set_exception(exc)
            self.abort()
            return
        if answer is not None:
            waiter.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close; connection_lost reads the end

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        reader, waiter = self.reader, self.waiter
        if reader is not None and waiter is not None and not waiter.done():
            try:
                waiter.set_result(reader.end(clean=exc is None))
            except Http1Error as error:
                waiter.set_exception(error)
        self.pool._forget(self)

    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes, reader: AnswerReader) -> Answer:
        """Send `request`, read its answer with `reader`."""
        if not self.usable():
            raise ConnectionClosed("closed before the request was sent")
        assert self.transport is not None
        assert self.waiter is None
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.reader, self.waiter = reader, waiter
        try:
            self.transport.write(request)
            return await waiter
        finally:
            self.reader = self.waiter = None
            if not waiter.done():
                waiter.cancel()
            elif not waiter.cancelled():
                waiter.exception()  # retrieved: a failure that raced a cancellation


AddrInfo = aiohappyeyeballs.AddrInfoType
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a field name (RFC 9110 §5.1)
_UNSAFE_VALUE = re.compile(r"[\r\n\x00]")
_TARGET = re.compile(r"[!-~]+")  # visible ASCII: an encoded request target


class Http1Pool:
    """Keep-alive connections to one origin (rules 5 to 9).

    `origin` is the URL whose scheme, host and port are reached; `proxy` an http:// forward
    proxy (with `proxy_headers` on its CONNECT for an https:// origin)."""

    def __init__(
        self, origin: str | yarl.URL, max_connections: int, *,
        proxy: yarl.URL | None = None, proxy_headers: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
    ) -> None:  # fmt: skip
        url = yarl.URL(origin)
        if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
            raise ValueError("an http(s) origin is needed")
        self.tls = url.scheme == "https"
        self._host = url.raw_host
        self._port = url.port
        self._server_hostname = self._host.rstrip(".")
        authority = url.host_port_subcomponent
        assert authority is not None
        self._authority = authority  # Host (RFC 9112 §3.2): `[::1]:8200`, no default port
        self._proxy = proxy
        if proxy is not None and (proxy.raw_host is None or proxy.port is None):
            raise ValueError("a proxy URL with a host is needed")
        # Through a proxy, a plain-http request names its whole URL (absolute form).
        self._target_prefix = f"http://{authority}" if proxy is not None and not self.tls else ""
        self._connect_head = b""
        if proxy is not None and self.tls:
            tunnel = f"{url.host_subcomponent}:{self._port}"
            self._connect_head = _head(f"CONNECT {tunnel} HTTP/1.1", tunnel,
                                       (proxy_headers or {}).items())
        self._limits = limits
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._context: ssl.SSLContext | None = None  # the newest context asked for
        self._addresses: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}  # rule 9
        self._closed = False
        self._all_gone = asyncio.Event()

    async def get(
        self, target: str, headers: Iterable[tuple[str, str]], *, max_body_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        """GET `target` (origin form, already encoded) with `headers` after Host: (status,
        body). Unbounded in time: the caller's timeout bounds it."""
        if not _TARGET.fullmatch(target) or not target.startswith("/"):
            raise ValueError("the request target must be an encoded origin-form path")
        if self.tls and ssl_context is None:
            raise ValueError("an https origin needs its TLS context")
        request = _head(f"GET {self._target_prefix}{target} HTTP/1.1", self._authority, headers)
        context = ssl_context if self.tls else None
        async with self._slots:
            if self._closed:
                raise PoolClosed("the vault client is closed")
            connection = self._take(context)
            for attempt in (1, 2):
                if connection is None:
                    connection = await self._connect(context)
                reader = AnswerReader(max_body_bytes, self._limits)
                try:
                    answer = await connection.exchange(request, reader)
                except ConnectionClosed:
                    connection.abort()
                    if attempt == 1 and connection.reused and not reader.started:
                        connection = None  # closed while idle (rule 7): once more, fresh
                        continue
                    raise
                except BaseException:
                    connection.abort()  # unknown state, or cancelled mid-answer (rule 6)
                    raise
                self._release(connection, answer.reusable)
                return answer.status, answer.body
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every connection, idle or busy; later requests are `PoolClosed`."""
        self._closed = True
        for connection in list(self._open):
            if connection.waiter is None:
                connection.close()
            else:
                connection.abort()
        self._idle.clear()
        if self._open:
            self._all_gone.clear()
            # A TLS close waits for the peer's close_notify: not for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), 1.0)
        for connection in list(self._open):
            connection.abort()
        await asyncio.sleep(0)

    # connections ---------------------------------------------------------------------
    def _take(self, context: ssl.SSLContext | None) -> _Connection | None:
        if context is not self._context:  # a reload (rule 8): idle ones of the old go
            self._context = context
            while self._idle:
                self._idle.pop().close()
        now = asyncio.get_running_loop().time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.usable():
                continue
            if now - connection.idle_since > self._limits.idle_timeout_s:
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if not reusable or self._closed or not connection.usable() \
                or connection.context is not self._context:  # fmt: skip
            connection.close()
            return
        now = asyncio.get_running_loop().time()
        connection.idle_since = now
        self._idle.append(connection)
        while now - self._idle[0].idle_since > self._limits.idle_timeout_s:
            self._idle.popleft().close()

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if connection in self._idle:
            self._idle.remove(connection)
        if not self._open:
            self._all_gone.set()

    async def _connect(self, context: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        if self._proxy is None:
            host, port = self._host, self._port
        else:
            host, port = cast(str, self._proxy.raw_host), cast(int, self._proxy.port)
        direct_tls = context if self._proxy is None else None
        try:
            sock = await aiohappyeyeballs.start_connection(
                await self._resolve(host, port),
                happy_eyeballs_delay=self._limits.happy_eyeballs_delay_s)  # fmt: skip
        except OSError as exc:
            raise ConnectFailed("cannot connect") from exc
        try:
            transport, connection = await loop.create_connection(
                lambda: _Connection(self, context), sock=sock, ssl=direct_tls,
                server_hostname=self._server_hostname if direct_tls is not None else None,
            )  # fmt: skip
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):
                raise ConnectFailed("cannot connect") from exc
            raise
        try:
            if self._connect_head:
                await self._tunnel(connection, transport, context)
        except BaseException:
            connection.abort()
            raise
        if self._closed:
            connection.abort()
            raise PoolClosed("the vault client is closed")
        return connection

    async def _tunnel(self, connection: _Connection, raw: asyncio.BaseTransport,
                      context: ssl.SSLContext | None) -> None:  # fmt: skip
        """CONNECT through the proxy, then TLS to the origin inside the tunnel."""
        reader = AnswerReader(0, self._limits, head_only=True)
        answer = await connection.exchange(self._connect_head, reader)
        if answer.status != 200:
            raise TunnelRefused(f"the proxy answered {answer.status}")
        if reader.tunnel_spoke_early:
            raise HeadRefused("bytes after the tunnel's head")
        assert context is not None
        try:
            tls = await asyncio.get_running_loop().start_tls(
                cast(asyncio.WriteTransport, raw), connection, context,
                server_hostname=self._server_hostname)  # fmt: skip
        except OSError as exc:
            raise ConnectFailed("TLS through the tunnel failed") from exc
        if tls is None:  # pragma: no cover - only for a transport closing meanwhile
            raise ConnectionClosed("the tunnel closed")
        connection.transport = tls

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        """Rule 9: an address literal as it is, a name from the cache or the resolver."""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return cast(list[AddrInfo], aiohappyeyeballs.addr_to_addr_infos((host, port)))
        loop = asyncio.get_running_loop()
        cached = self._addresses.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_ADDRCONFIG)  # fmt: skip
        found = cast(list[AddrInfo], infos)
        self._addresses[(host, port)] = (loop.time() + self._limits.dns_ttl_s, found)
        return found


def _head(first_line: str, authority: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A request head: `first_line`, Host, then `headers` as given (no line breaks)."""
    lines = [first_line, f"Host: {authority}"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
            raise ValueError("a header name or value that cannot be sent")  # never the value
        lines.append(f"{name}: {value}")
    lines += ("", "")
    return "\r\n".join(lines).encode()
