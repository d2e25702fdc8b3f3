"""A minimal, strict HTTP/1.1 keep-alive client on asyncio protocols and `httptools`
(llhttp): one of the vault HTTP client candidates `bench.vault_clients` measures.

Hand-written because the question is what the smallest correct client costs per request
against aiohttp, pycurl and pyreqwest; it is a measured candidate in bench/, not part of
piigate (which would need its error mapping, its fuzzing and its review first).

Rules, all enforced here:
1. One request at a time per connection (no pipelining); idle connections are reused, the
   most recently used first, up to `limit` connections in all; a caller beyond that waits.
2. The answer's head (status line and headers) is at most `max_head_bytes` and
   `max_headers` headers; the parser (llhttp) refuses anything that is not HTTP/1.x.
3. The body must be framed by `Content-Length`, at most `max_body_bytes`; an answer with
   `Transfer-Encoding` (chunked) or without a length is refused (`ResponseRefused`), as is
   one whose body runs past its length cap.
4. A connection that closes before its answer is complete is `ConnectionBroken` (the
   request may have reached the server: it is not retried). An answer that says
   `Connection: close` (or HTTP/1.0 without keep-alive) closes its connection after it.
5. Any refusal closes the connection: a connection in an unknown state is never reused.
The caller bounds every request's time (`asyncio.timeout`); a cancelled request closes its
connection for the same reason.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import httptools


class H1Error(Exception):
    """Base of this client's failures."""


class ResponseRefused(H1Error):
    """The answer broke a rule (too large, not length-framed, not HTTP)."""


class ConnectionBroken(H1Error):
    """The connection ended before the answer did."""


class _Connection(asyncio.Protocol):
    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.body = bytearray()
        self.head_bytes = self.raw_before_body = 0
        self.headers = 0
        self.length: int | None = None
        self.in_body = False
        self.close_after = False
        self.lost = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self._refuse(ResponseRefused("bytes outside an answer"))
            return
        if not self.in_body:
            # Bytes before the head's end, some of which may be body: a bound on what the
            # parser buffers for a line that never ends (the exact head size is counted
            # from its callbacks).
            self.raw_before_body += len(data)
            if self.raw_before_body > self.pool.max_head_bytes + self.pool.max_body_bytes:
                self._refuse(ResponseRefused("head too large"))
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(ResponseRefused("upgrade"))
        except httptools.HttpParserError as exc:  # a rule broken in a callback, or not HTTP
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, H1Error) else ResponseRefused("not HTTP"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionBroken("closed before the answer's end"))
        self.pool._forget(self)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self._count_head(len(status) + 15)  # "HTTP/1.1 200 " and CRLF

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += 1
        if self.headers > self.pool.max_headers:
            raise ResponseRefused("too many headers")
        self._count_head(len(name) + len(value) + 4)
        key = name.lower()
        if key == b"content-length":
            if not value.isdigit() or self.length is not None:
                raise ResponseRefused("bad Content-Length")
            self.length = int(value)
            if self.length > self.pool.max_body_bytes:
                raise ResponseRefused("response too large")
        elif key == b"transfer-encoding":
            raise ResponseRefused("Transfer-Encoding is not accepted")

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > self.pool.max_head_bytes:
            raise ResponseRefused("head too large")

    def on_headers_complete(self) -> None:
        if self.length is None:
            raise ResponseRefused("no Content-Length")
        self.in_body = True
        self.close_after = not self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > (self.length or 0):
            raise ResponseRefused("body longer than Content-Length")

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        body = bytes(self.body)
        answer = self.answer
        self._reset()
        if answer is not None and not answer.done():
            answer.set_result((status, body))

    def _reset(self) -> None:
        self.answer, self.body, self.length = None, bytearray(), None
        self.head_bytes = self.raw_before_body = self.headers = 0
        self.in_body = False

    def _refuse(self, exc: H1Error) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        assert self.answer is None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(head)
        return await self.answer


class H1Pool:
    """Keep-alive connections to one `host:port` (see the module docstring)."""

    def __init__(self, host: str, port: int, limit: int = 64, *, max_head_bytes: int = 16384,
                 max_headers: int = 100, max_body_bytes: int = 1 << 20) -> None:  # fmt: skip
        self.host, self.port, self.limit = host, port, limit
        self.max_head_bytes, self.max_headers = max_head_bytes, max_headers
        self.max_body_bytes = max_body_bytes
        self._idle: deque[_Connection] = deque()
        self._open: set[_Connection] = set()
        self._slots = asyncio.Semaphore(limit)

    async def request(self, head: bytes) -> tuple[int, bytes]:
        """Send `head` (a complete GET request, ending in a blank line); (status, body)."""
        async with self._slots:
            connection = await self._take()
            try:
                status, body = await connection.request(head)
            except BaseException:
                connection.close()  # unknown state (rule 5), or cancelled mid-answer
                raise
            if connection.close_after or connection.lost:
                connection.close()
            else:
                self._idle.append(connection)
            return status, body

    async def _take(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and connection.transport is not None \
                    and not connection.transport.is_closing():  # fmt: skip
                return connection
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port)  # fmt: skip
        except OSError as exc:
            raise ConnectionBroken("cannot connect") from exc
        self._open.add(connection)
        return connection

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)
