"""The strict HTTP/1.1 candidate client (bench.h1client): its rules, against real sockets
on loopback that answer exactly the bytes each test scripts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from bench.h1client import ConnectionBroken, H1Pool, ResponseRefused

REQUEST = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

Answer = Callable[[int], bytes | None]  # request number on the connection -> bytes to send


@asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[tuple[H1Pool, list[int]]]:
    """A server that answers each request with `answer(n)` and closes when the next answer
    would be None; it counts the connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            for n in range(10):
                await reader.readuntil(b"\r\n\r\n")
                data = answer(n)
                if data is None:
                    break
                writer.write(data)
                await writer.drain()
                if answer(n + 1) is None:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = H1Pool("127.0.0.1", srv.sockets[0].getsockname()[1], limit=4, max_body_bytes=64,
                  max_head_bytes=256)  # fmt: skip
    try:
        yield pool, accepted
    finally:
        await pool.close()
        srv.close()
        await srv.wait_closed()


async def ask(pool: H1Pool) -> tuple[int, bytes]:
    async with asyncio.timeout(5):
        return await pool.request(REQUEST)


async def test_keep_alive_reuses_one_connection() -> None:
    async with server(lambda n: OK) as (pool, accepted):
        for _ in range(3):
            assert await ask(pool) == (200, b"hello")
    assert len(accepted) == 1


async def test_connection_close_is_honoured() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    async with server(lambda n: closing if n == 0 else None) as (pool, accepted):
        assert await ask(pool) == (200, b"hi")
        assert await ask(pool) == (200, b"hi")
    assert len(accepted) == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", "no Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n" + b"x" * 65, "too large"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"y" * 300 + b"\r\nContent-Length: 0\r\n\r\n", "head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
         "Content-Length|not HTTP"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP"),
    ],
)  # fmt: skip
async def test_answers_outside_the_rules_are_refused(answer: bytes, why: str) -> None:
    async with server(lambda n: answer) as (pool, _):
        with pytest.raises(ResponseRefused, match=why):
            await ask(pool)


async def test_a_body_cut_short_is_a_broken_connection() -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with server(lambda n: short if n == 0 else None) as (pool, _):
        with pytest.raises(ConnectionBroken):
            await ask(pool)


async def test_a_refused_answer_never_leaves_its_connection_for_reuse() -> None:
    served: list[int] = []

    def answers(n: int) -> bytes:  # the first answer of all is refused, the others not
        if n == 0:
            served.append(n)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" if len(served) == 1 else OK

    async with server(answers) as (pool, accepted):
        with pytest.raises(ResponseRefused):
            await ask(pool)
        assert await ask(pool) == (200, b"hello")
    assert len(accepted) == 2
