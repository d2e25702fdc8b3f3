"""Test helper: a small HTTP forward proxy on 127.0.0.1:0 that records what passed through.

    async with running_proxy() as proxy:
        environ = {"HTTPS_PROXY": proxy.url, "HTTP_PROXY": proxy.url}
        ...
        assert proxy.passed == [Passed("CONNECT", "127.0.0.1:8443", True), ...]

Hand-written (about the size of a fixture) rather than `proxy.py` from PyPI, because a
test needs to see each request line and whether it carried the right Proxy-Authorization,
and that package's plugin API is larger than this whole file. It speaks the two forms a
forward proxy must (RFC 9110 §9.3.6, RFC 9112 §3.2.2):

- `CONNECT host:port`: a tunnel (`200`, then bytes both ways; TLS stays end to end);
- absolute-form `GET http://host:port/path`: forwarded in origin form with
  `Connection: close` on both sides, so every request arrives on a connection of its own
  and is recorded.

Only loopback targets are reached (anything else is answered 502), so no test can leave
the machine through it. With `credentials`, a request without the matching Basic
`Proxy-Authorization` is answered 407.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import yarl

from piigate.transport.addresses import is_loopback_host

MAX_HEAD_BYTES = 64 * 1024
IO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Passed:
    """One request the proxy was asked to carry."""

    method: str
    target: str  # `host:port` for CONNECT, the absolute URL otherwise
    authorized: bool  # carried the expected Proxy-Authorization (True when none expected)


@dataclass
class ForwardProxy:
    url: str = ""  # http://127.0.0.1:PORT
    credentials: tuple[str, str] | None = None
    passed: list[Passed] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def targets(self, method: str | None = None) -> list[str]:
        return [p.target for p in self.passed if method is None or p.method == method]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.timeout(IO_TIMEOUT_S * 3):
                await self._serve(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, version = request_line.split(" ", 2)
        headers = [line.split(":", 1) for line in header_lines]
        authorization = next((v.strip() for k, v in headers
                              if k.strip().lower() == "proxy-authorization"), None)
        authorized = self.credentials is None or authorization == _basic(*self.credentials)
        self.passed.append(Passed(method, target, authorized))
        if not authorized:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            host = host.strip("[]")
        else:
            url = yarl.URL(target)
            host, port = url.host or "", str(url.port)
        if not is_loopback_host(host) or not port.isdigit():
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), IO_TIMEOUT_S)
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
            else:
                kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in (
                    "proxy-authorization", "proxy-connection", "connection", "keep-alive")]
                origin = url.raw_path_qs or "/"
                up_writer.write("\r\n".join(
                    [f"{method} {origin} {version}", *kept, "Connection: close", "", ""]
                ).encode("latin-1"))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await asyncio.wait_for(source.read(64 * 1024), IO_TIMEOUT_S):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@asynccontextmanager
async def running_proxy(credentials: tuple[str, str] | None = None) -> AsyncIterator[ForwardProxy]:
    """A forward proxy on 127.0.0.1:0; with `credentials`, `url` carries them."""
    proxy = ForwardProxy(credentials=credentials)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
    port = server.sockets[0].getsockname()[1]
    auth = f"{credentials[0]}:{credentials[1]}@" if credentials else ""
    proxy.url = f"http://{auth}127.0.0.1:{port}"
    try:
        yield proxy
    finally:
        server.close()
        for task in list(proxy._tasks):
            task.cancel()
        await server.wait_closed()
