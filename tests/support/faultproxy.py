"""Test helper: a misbehaving network between piigate and a real vault.

    async with running_fault_proxy() as proxy:
        proxy.upstream = vault.base_url       # the real local vault
        proxy.fault = Fault.split(3, 0.02)    # the next answers arrive in three pieces
        client = VaultClient(proxy.url, ...)

An asyncio TCP server on 127.0.0.1, port 0. For each connection it reads one HTTP/1.1
request, forwards it to `upstream` (HTTP/1.0, so the upstream closes after its answer and
never uses chunked framing), reads the whole answer, and hands it back damaged as the
current `fault` says, always with `Connection: close`. Faults act on the wire, below any
HTTP library, so the client under test sees what a real broken network or vault would
send: bodies in several TCP segments, a stall, a reset, a short body, garbage.

Bounds: every wait is capped (`HOLD_CAP_S` for a hang, `CONNECTION_CAP_S` for a whole
connection), requests and answers are capped in size, and `aclose` (the context manager's
exit) stops the server and cancels every connection still open. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

HOLD_CAP_S = 30.0  # a hang never outlives this (nor the proxy)
CONNECTION_CAP_S = 60.0  # nor does any connection
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 4 * 1024 * 1024
LOOPBACK = "127.0.0.1"


class Kind(Enum):
    PASS = "pass"  # forward unchanged
    SPLIT = "split"  # the body in `pieces` writes, `delay_s` apart
    TRICKLE = "trickle"  # the body `step` bytes at a time, `delay_s` apart
    HANG = "hang"  # read the request, never answer (until HOLD_CAP_S or close)
    LATE = "late"  # the whole answer after `delay_s`
    REWRITE = "rewrite"  # the body replaced by `rewrite(body)`, Content-Length fixed up
    RESET = "reset"  # headers and half the body, then a TCP reset
    TRUNCATED = "truncated"  # Content-Length `missing` bytes more than is sent, then FIN
    STALL = "stall"  # headers and half the body, then silence (until HOLD_CAP_S)
    RAW = "raw"  # `raw` bytes instead of any HTTP answer, then FIN


@dataclass(frozen=True)
class Fault:
    """What the proxy does to the answers it forwards; build one with the constructors."""

    kind: Kind = Kind.PASS
    pieces: int = 1
    step: int = 1
    delay_s: float = 0.0
    missing: int = 0
    raw: bytes = b""
    rewrite: Callable[[bytes], bytes] | None = None

    @classmethod
    def split(cls, pieces: int, delay_s: float) -> Fault:
        return cls(Kind.SPLIT, pieces=max(1, pieces), delay_s=delay_s)

    @classmethod
    def trickle(cls, step: int, delay_s: float) -> Fault:
        return cls(Kind.TRICKLE, step=max(1, step), delay_s=delay_s)

    @classmethod
    def hang(cls) -> Fault:
        return cls(Kind.HANG)

    @classmethod
    def late(cls, delay_s: float) -> Fault:
        return cls(Kind.LATE, delay_s=delay_s)

    @classmethod
    def body(cls, rewrite: Callable[[bytes], bytes]) -> Fault:
        return cls(Kind.REWRITE, rewrite=rewrite)

    @classmethod
    def replace_body(cls, body: bytes) -> Fault:
        return cls(Kind.REWRITE, rewrite=lambda _old: body)

    @classmethod
    def duplicates(cls, conflicting: bool) -> Fault:
        """Every item of a JSON list answer twice: the copy identical, or with each field
        value replaced (a vault contradicting itself)."""
        return cls(Kind.REWRITE, rewrite=lambda old: _duplicated(old, conflicting))

    @classmethod
    def reset_mid_body(cls) -> Fault:
        return cls(Kind.RESET)

    @classmethod
    def truncated(cls, missing: int = 10) -> Fault:
        return cls(Kind.TRUNCATED, missing=max(1, missing))

    @classmethod
    def stall_mid_body(cls) -> Fault:
        return cls(Kind.STALL)

    @classmethod
    def garbage(cls, raw: bytes = b"\x00\xff not HTTP at all \r\n\r\n") -> Fault:
        return cls(Kind.RAW, raw=raw)


@dataclass(frozen=True)
class _Answer:
    status_line: bytes  # b"HTTP/1.1 200 OK"
    headers: list[tuple[bytes, bytes]]  # without framing headers
    body: bytes


class FaultProxy:
    """The running proxy; set `upstream` and `fault` at any time (read per connection)."""

    def __init__(self) -> None:
        self.upstream = ""
        self.fault = Fault()
        self.connections = 0  # accepted so far
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{LOOPBACK}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)

    async def aclose(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            _no_delay(writer)
            async with asyncio.timeout(CONNECTION_CAP_S):
                await self._serve(reader, writer, self.fault)
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError):
            pass  # the client went away or sent nonsense, or the fault ended the connection
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fault: Fault
    ) -> None:
        request = await _read_request(reader)
        if fault.kind is Kind.HANG:
            await self._hold()
            return
        if fault.kind is Kind.RAW:
            writer.write(fault.raw)
            await writer.drain()
            return
        answer = await _forward(self.upstream, request)
        body = answer.body
        if fault.kind is Kind.REWRITE and fault.rewrite is not None:
            body = fault.rewrite(body)
        declared = len(body) + (fault.missing if fault.kind is Kind.TRUNCATED else 0)
        head = _head(answer, declared)
        if fault.kind is Kind.LATE:
            await asyncio.sleep(fault.delay_s)
        writer.write(head)
        await writer.drain()
        if fault.kind is Kind.SPLIT:
            await _write_pieces(writer, body, -(-len(body) // fault.pieces), fault.delay_s)
        elif fault.kind is Kind.TRICKLE:
            await _write_pieces(writer, body, fault.step, fault.delay_s)
        elif fault.kind in (Kind.RESET, Kind.STALL):
            writer.write(body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.05)  # let the client take the head and the first half
            if fault.kind is Kind.STALL:
                await self._hold()
            else:
                _reset(writer)
        else:
            writer.write(body)
            await writer.drain()

    async def _hold(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), HOLD_CAP_S)


@asynccontextmanager
async def running_fault_proxy(upstream: str = "") -> AsyncIterator[FaultProxy]:
    """A started proxy on 127.0.0.1:0, stopped (every connection cancelled) on exit."""
    proxy = FaultProxy()
    proxy.upstream = upstream
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


# --- the wire ---------------------------------------------------------------------------
async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """One request, head and (Content-Length) body, as received."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD_BYTES:
        raise OSError("request head too large")
    length = _content_length(head)
    body = await reader.readexactly(length) if length else b""
    return head + body


async def _forward(upstream: str, request: bytes) -> _Answer:
    """`request` sent to `upstream` as HTTP/1.0 without keep-alive; its whole answer."""
    target = urlsplit(upstream)
    if target.hostname not in (LOOPBACK, "localhost") or target.port is None:
        raise OSError("the upstream must be a loopback http://host:port")
    head, _, body = request.partition(b"\r\n\r\n")
    request_line, *header_lines = head.split(b"\r\n")
    method, path, _version = request_line.split(b" ", 2)
    kept = [h for h in header_lines
            if h.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")]
    outgoing = b"\r\n".join([method + b" " + path + b" HTTP/1.0", *kept,
                             b"Connection: close"]) + b"\r\n\r\n" + body
    up_reader, up_writer = await asyncio.open_connection(LOOPBACK, target.port)
    try:
        up_writer.write(outgoing)
        await up_writer.drain()
        raw = await up_reader.read(MAX_BODY_BYTES + MAX_HEAD_BYTES)
        while len(raw) <= MAX_BODY_BYTES + MAX_HEAD_BYTES:
            more = await up_reader.read(MAX_BODY_BYTES)
            if not more:
                break
            raw += more
    finally:
        up_writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(up_writer.wait_closed(), 1)
    answer_head, _, answer_body = raw.partition(b"\r\n\r\n")
    status_line, *lines = answer_head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() not in (b"content-length", b"connection", b"keep-alive",
                                        b"transfer-encoding"):
            headers.append((name.strip(), value.strip()))
    length = _content_length(answer_head + b"\r\n\r\n")
    if length is not None:
        answer_body = answer_body[:length]
    return _Answer(b"HTTP/1.1" + status_line[len(b"HTTP/1.x"):], headers, answer_body)


def _head(answer: _Answer, content_length: int) -> bytes:
    lines = [answer.status_line, *(n + b": " + v for n, v in answer.headers),
             b"Content-Length: " + str(content_length).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _write_pieces(
    writer: asyncio.StreamWriter, body: bytes, size: int, delay_s: float
) -> None:
    """`body` in writes of `size` bytes, each flushed (TCP_NODELAY) then `delay_s` apart."""
    for start in range(0, len(body), max(1, size)):
        if start:
            await asyncio.sleep(delay_s)
        writer.write(body[start:start + size])
        await writer.drain()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            if not 0 <= length <= MAX_BODY_BYTES:
                raise OSError("body too large")
            return length
    return None


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER on, zero seconds."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _duplicated(body: bytes, conflicting: bool) -> bytes:
    items = json.loads(body)
    assert isinstance(items, list), "duplicates need a JSON list answer"
    copies = copy.deepcopy(items)
    if conflicting:
        for item in copies:
            item["fields"] = {name: f"other-{name}" for name in item.get("fields", {})}
    return json.dumps(items + copies).encode()
