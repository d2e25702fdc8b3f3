"""The vault's HTTP/1.1 transport (piigate.vault.http1) and VaultClient on it, against
real sockets on loopback that answer exactly the bytes each test scripts: framing, limits,
the pool's reuse and retry rules, timeouts, proxies' request forms, TLS reloads."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yarl

from piigate.config.network import VaultTlsFiles
from piigate.errors import VaultResponseInvalid, VaultTimeout, VaultUnavailable
from piigate.transport.proxies import Route
from piigate.vault import http1
from piigate.vault.client import DetokenizeQuery, VaultClient, form_value
from piigate.vault.http1 import Http1Pool, Limits
from piigate.vault.tls import VaultTls
from tests.support.pki import make_ca, server_cert

# A step of a scripted answer: bytes to write, seconds to sleep, or an action.
Step = bytes | float | str  # "close" (FIN), "reset" (RST), "hold" (until released), "stall"
Script = Callable[[int, int], Sequence[Step]]  # (connection, request on it) -> its steps
BODY = b'[{"token_id": "tok-1", "fields": {"user_id": "u-1"}}]'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
CAP = 64  # the pool tests' body cap
SMALL = Limits(max_head_bytes=1024, max_headers=16)
QUERY = DetokenizeQuery(
    collection="users", token_ids=("tok-1",), props=("user_id",), reason="AppFunctionality",
    adhoc_reason=None, api_key="vault-key-xyz", custom_audit="piigate request r1",
)


@dataclass
class Wire:
    """What the scripted server saw."""

    url: str = ""
    heads: list[tuple[int, bytes]] = field(default_factory=list)  # (connection, head)
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0
    ended_by_client: set[int] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def scripted(script: Script, *, host: str = "127.0.0.1",
                   tls: ssl.SSLContext | None = None) -> AsyncIterator[Wire]:  # fmt: skip
    wire = Wire()
    writers: set[asyncio.StreamWriter] = set()
    done = asyncio.Event()  # every handler has returned

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        done.clear()
        number, wire.accepted = wire.accepted, wire.accepted + 1
        wire.open_now += 1
        wire.most_open = max(wire.most_open, wire.open_now)
        try:
            for request in range(20):
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    wire.ended_by_client.add(number)
                    return
                wire.heads.append((number, head))
                for step in script(number, request):
                    if isinstance(step, bytes):
                        writer.write(step)
                        await writer.drain()
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    elif step == "hold":
                        await asyncio.wait_for(wire.release.wait(), 10)
                    elif step == "stall":  # silent until the client closes (or 10 s)
                        if not await asyncio.wait_for(reader.read(), 10):
                            wire.ended_by_client.add(number)
                        return
                    elif step == "reset":
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))  # fmt: skip
                        writer.transport.abort()
                        return
                    else:
                        assert step == "close"
                        return
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass
        finally:
            wire.open_now -= 1
            writer.close()
            writers.discard(writer)
            if not writers:
                done.set()

    server = await asyncio.start_server(handle, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    wire.url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        yield wire
    finally:
        server.close()
        wire.release.set()
        for writer in list(writers):
            writer.transport.abort()
        if writers:
            await asyncio.wait_for(done.wait(), 5)
        await server.wait_closed()


def always(*steps: Step) -> Script:
    return lambda _connection, _request: steps


@asynccontextmanager
async def pool_for(wire: Wire, limit: int = 4, **kwargs: object) -> AsyncIterator[Http1Pool]:
    pool = Http1Pool(wire.url, limit, limits=SMALL, **kwargs)  # type: ignore[arg-type]
    try:
        yield pool
    finally:
        await pool.aclose()


@asynccontextmanager
async def client_for(url: str, **kwargs: object) -> AsyncIterator[VaultClient]:
    client = VaultClient(url, 4096, **kwargs)  # type: ignore[arg-type]
    try:
        yield client
    finally:
        await client.aclose()


async def ask(pool: Http1Pool, timeout_s: float = 5.0) -> tuple[int, bytes]:
    async with asyncio.timeout(timeout_s):
        return await pool.get("/x", [("Accept", "application/json")], max_body_bytes=CAP)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 2 s: {what}")


def head(extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + extra + b"\r\n"


# --- the request ------------------------------------------------------------------------
def test_query_values_are_encoded_as_yarl_encoded_them() -> None:
    base = yarl.URL("http://h/p")
    samples = [chr(c) for c in range(0x3000)] + [chr(c) for c in range(0xE000, 0x110000, 251)]
    for text in [*samples, "a b&c=d+e", "é☃ ok", "%41%zz", "x=y&z#f", "~-._!$'()*,/:?@"]:
        assert form_value(text) == \
            base.extend_query([("k", text)]).raw_query_string[2:], repr(text)  # fmt: skip


async def test_the_request_is_piianos_detokenize_with_exactly_its_headers() -> None:
    odd = "piigate request r1 & x=y + é"
    query = DetokenizeQuery(
        collection="users", token_ids=("tok-1", "tok 2"), props=("user_id", "ssn.mask"),
        reason="Other", adhoc_reason="ticket #12 & more", api_key="vault-key-xyz",
        tags=("pii+tag",), custom_audit=odd,
    )  # fmt: skip
    async with scripted(always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")) as wire, \
            client_for(wire.url, route=Route(headers={"X-Route": "r"})) as client:  # fmt: skip
        assert await client.detokenize(query, 2, headers={"traceparent": "00-ab-cd-01"}) == {}
    request_line, *lines = wire.heads[0][1].decode().split("\r\n")[:-2]
    method, target, version = request_line.split(" ")
    params = [("reason", "Other"), ("adhoc_reason", "ticket #12 & more"),
              ("custom_audit", odd), ("token_ids", "tok-1"), ("token_ids", "tok 2"),
              ("props", "user_id"), ("props", "ssn.mask"), ("tags", "pii+tag")]  # fmt: skip
    url = yarl.URL(wire.url + "/api/pvlt/1.0/data/collections/users/tokens")
    assert (method, version) == ("GET", "HTTP/1.1")
    assert target == url.extend_query(params).raw_path_qs  # byte for byte what aiohttp sent
    assert parse_qsl(urlsplit(target).query) == params
    assert lines == [f"Host: {url.host_port_subcomponent}", "traceparent: 00-ab-cd-01",
                     "X-Route: r", "Authorization: Bearer vault-key-xyz",
                     "Accept: application/json"]  # fmt: skip


async def test_a_header_with_a_line_break_is_never_sent() -> None:
    async with scripted(always(OK)) as wire, pool_for(wire) as pool:
        with pytest.raises(ValueError, match="cannot be sent") as caught:
            await pool.get("/x", [("X", "a\r\nInjected: 1")], max_body_bytes=CAP)
        assert "Injected" not in str(caught.value)
    assert wire.heads == []


async def test_an_ipv6_literal_host_works() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with scripted(always(OK), host="::1") as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)
    assert wire.heads[0][1].split(b"\r\n")[1].startswith(b"Host: [::1]:")


async def test_a_name_is_resolved_and_its_addresses_raced() -> None:
    """`localhost` may name ::1 first: the IPv4 listener is still found (Happy Eyeballs)."""
    async with scripted(always(OK)) as wire:
        port = yarl.URL(wire.url).port
        async with client_for(f"http://localhost:{port}") as client:
            for _ in range(2):
                assert await client.detokenize(QUERY, 5) == {"tok-1": {"user_id": "u-1"}}
    assert wire.heads[0][1].split(b"\r\n")[1] == f"Host: localhost:{port}".encode()


# --- reading the answer -------------------------------------------------------------------
async def test_content_length_keep_alive_reuses_one_connection() -> None:
    async with scripted(always(OK)) as wire, pool_for(wire) as pool:
        for _ in range(3):
            assert await ask(pool) == (200, BODY)
    assert wire.accepted == 1


async def test_a_chunked_body_cut_anywhere_is_decoded_and_the_connection_kept() -> None:
    chunked: list[Step] = [
        head(b"Transfer-Encoding: chunked\r\n") + b"5\r\nhe", 0.01, b"llo\r\n1", 0.01,
        b"0\r\n world, and", 0.01, b" more\r\n0\r", 0.01, b"\n\r\n"]  # fmt: skip
    async with scripted(always(*chunked)) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, b"hello world, and more")
        assert await ask(pool) == (200, b"hello world, and more")
    assert wire.accepted == 1


@pytest.mark.parametrize(
    "answer",
    [[head() + b"hel", 0.01, b"lo", "close"],  # HTTP/1.1 without a length: up to the close
     [b"HTTP/1.0 200 OK\r\n\r\nhello", "close"]],
    ids=["http/1.1", "http/1.0"],
)
async def test_a_body_up_to_the_close_is_read_whole(answer: list[Step]) -> None:
    async with scripted(always(*answer)) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, b"hello")
        assert await ask(pool) == (200, b"hello")
    assert wire.accepted == 2


@pytest.mark.parametrize(
    "answer",
    [head(b"Content-Length: 5\r\nConnection: close\r\n") + b"hello",
     b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
     OK.replace(BODY, b"hello").replace(b"%d" % len(BODY), b"5") + b"HTTP/1.1 200 OK\r\n"],
    ids=["connection-close", "http/1.0", "bytes-after-the-answer"],
)
async def test_an_answer_that_ends_its_connection_is_not_reused(answer: bytes) -> None:
    """The server keeps these connections open: the client must not reuse them."""
    async with scripted(always(answer)) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, b"hello")
        assert await ask(pool) == (200, b"hello")
    assert wire.accepted == 2


async def test_interim_answers_are_skipped() -> None:
    async with scripted(always(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                               b"Link: </a>\r\n\r\n" + OK)) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ([head(b"Content-Length: 10\r\n") + b"hello", "close"], http1.EndedEarly),
        ([head(b"Content-Length: 10\r\n") + b"hello", 0.02, "reset"], http1.EndedEarly),
        ([head(b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n", "close"],
         http1.EndedEarly),
        ([head(b"Transfer-Encoding: chunked\r\n") + b"zz\r\nhello\r\n0\r\n\r\n"],
         http1.EndedEarly),
        ([head() + b"hello", 0.02, "reset"], http1.EndedEarly),  # to the close, but a reset
        ([head(b"Content-Length: 65\r\n")], http1.TooLarge),  # declared: refused at once
        ([head() + b"x" * 65, "close"], http1.TooLarge),
        ([head(b"Transfer-Encoding: chunked\r\n") + b"41\r\n" + b"x" * 65 + b"\r\n0\r\n\r\n"],
         http1.TooLarge),
        ([head(b"Transfer-Encoding: chunked\r\n") + b"1\r\nx\r\n0\r\nX-T: ", 0.01,
          b"t" * 600, 0.01, b"t" * 600, 0.01, b"\r\n\r\n"], http1.TooLarge),  # trailer flood
        ([head(b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n") + b"2\r\nhi\r\n0\r\n\r\n"],
         http1.HeadRefused),
        ([head(b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n") + b"2\r\nhi\r\n0\r\n\r\n"],
         http1.HeadRefused),
        ([head(b"Content-Length: 2\r\nContent-Length: 3\r\n") + b"hi!"], http1.HeadRefused),
        ([head(b"Transfer-Encoding: gzip\r\n") + b"hi", "close"], http1.HeadRefused),
        ([head(b"Transfer-Encoding: gzip, chunked\r\n") + b"2\r\nhi\r\n0\r\n\r\n"],
         http1.HeadRefused),
        ([head(b"X-Big: " + b"a" * 1100 + b"\r\n")], http1.HeadRefused),
        ([b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 600, 0.01, b"a" * 600], http1.HeadRefused),
        ([head(b"".join(b"X-%d: v\r\n" % n for n in range(17)))], http1.HeadRefused),
        ([b"SSH-2.0-OpenSSH_9.6\r\n", "close"], http1.HeadRefused),
        ([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"], http1.HeadRefused),  # bare LF
        ([head(b"Upgrade: h2c\r\nConnection: upgrade\r\n", b"101 Switching")], http1.HeadRefused),
        ([b"HTTP/1.1 200 OK\r\nContent-"], http1.ConnectionClosed),  # then the close
        (["close"], http1.ConnectionClosed),
    ],
    ids=["short-then-close", "short-then-reset", "chunked-unfinished", "chunked-broken",
         "to-close-reset", "declared-too-large", "found-too-large",
         "chunked-too-large", "trailer-flood", "cl-and-te", "te-and-cl", "two-lengths",
         "te-gzip", "te-gzip-chunked", "huge-head", "huge-head-in-pieces", "too-many-headers",
         "not-http", "bare-lf", "upgrade", "closed-in-head", "closed-without-answer"],
)
async def test_a_broken_answer_is_its_one_error_and_closes_the_connection(
    answer: list[Step], error: type[http1.Http1Error]
) -> None:
    steps = [*answer, "close"] if answer[-1] not in ("close", "reset") else answer
    async with scripted(lambda c, r: steps if c == 0 else [OK]) as wire, \
            pool_for(wire) as pool:  # fmt: skip
        with pytest.raises(error) as caught:
            await ask(pool)
        assert type(caught.value) is error
        assert await ask(pool) == (200, BODY)  # a fresh connection
    assert wire.accepted == 2


async def test_a_body_of_exactly_the_cap_and_a_head_under_its_limit_pass() -> None:
    answer = head(b"X-Big: " + b"a" * 900 + b"\r\nContent-Length: 64\r\n") + b"x" * 64
    async with scripted(always(answer)) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, b"x" * 64)


# --- the pool ---------------------------------------------------------------------------
async def test_an_idle_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    """Request 2 meets the server's close of its idle connection: sent again, fresh."""
    def script(connection: int, request: int) -> list[Step]:
        return [OK] if (connection, request) in ((0, 0), (1, 0)) else ["close"]

    async with scripted(script) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)
        assert await ask(pool) == (200, BODY)
    assert wire.accepted == 2
    assert [c for c, _ in wire.heads] == [0, 0, 1]


async def test_the_retry_happens_once_and_never_on_a_fresh_connection() -> None:
    def script(connection: int, request: int) -> list[Step]:
        return [OK] if (connection, request) == (0, 0) else ["close"]

    async with scripted(script) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)
        with pytest.raises(http1.ConnectionClosed):
            await ask(pool)  # the reused one closes, and so does the fresh retry
        assert wire.accepted == 2
        with pytest.raises(http1.ConnectionClosed):
            await ask(pool)  # a fresh connection that closes: not retried
    assert wire.accepted == 3


async def test_no_retry_after_a_byte_of_the_answer() -> None:
    def script(connection: int, request: int) -> list[Step]:
        return [OK] if (connection, request) == (0, 0) else [b"HTTP/1.1 2", "close"]

    async with scripted(script) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)
        with pytest.raises(http1.ConnectionClosed):
            await ask(pool)
    assert wire.accepted == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async with scripted(always(OK, "close")) as wire, pool_for(wire) as pool:
        assert await ask(pool) == (200, BODY)  # keep-alive said, then the server closes
        await asyncio.sleep(0.05)
        assert await ask(pool) == (200, BODY)
    assert [c for c, _ in wire.heads] == [0, 1]


async def test_bytes_on_an_idle_connection_close_it() -> None:
    async with scripted(always(OK, 0.02, b"HTTP/1.1 200 OK\r\n")) as wire, \
            pool_for(wire) as pool:  # fmt: skip
        assert await ask(pool) == (200, BODY)
        await eventually(lambda: 0 in wire.ended_by_client, "the idle connection closed")
        assert await ask(pool) == (200, BODY)
    assert wire.accepted == 2


async def test_a_request_cancelled_mid_answer_closes_its_connection() -> None:
    def script(connection: int, _request: int) -> list[Step]:
        return [head(b"Content-Length: 10\r\n") + b"hel", "stall"] if connection == 0 else [OK]

    async with scripted(script) as wire, pool_for(wire) as pool:
        with pytest.raises(TimeoutError):
            await ask(pool, timeout_s=0.2)
        await eventually(lambda: 0 in wire.ended_by_client, "the cancelled one closed")
        assert await ask(pool) == (200, BODY)
    assert wire.accepted == 2


async def test_the_pool_holds_at_most_its_limit_and_a_caller_beyond_it_waits() -> None:
    async with scripted(always("hold", OK)) as wire, pool_for(wire, limit=2) as pool:
        calls = [asyncio.create_task(ask(pool)) for _ in range(3)]
        await eventually(lambda: len(wire.heads) == 2, "two requests in flight")
        await asyncio.sleep(0.1)
        assert (wire.accepted, len(wire.heads)) == (2, 2)  # the third waits for a slot
        wire.release.set()
        assert await asyncio.gather(*calls) == [(200, BODY)] * 3
    assert (wire.accepted, wire.most_open) == (2, 2)


async def test_a_caller_waiting_for_a_connection_times_out_within_its_budget() -> None:
    async with scripted(always("hold", OK)) as wire, \
            client_for(wire.url, max_connections=1) as client:  # fmt: skip
        first = asyncio.create_task(client.detokenize(QUERY, 5))
        await eventually(lambda: len(wire.heads) == 1, "the first request in flight")
        started = asyncio.get_running_loop().time()
        with pytest.raises(VaultTimeout):
            await client.detokenize(QUERY, 0.2)
        assert asyncio.get_running_loop().time() - started < 2
        wire.release.set()
        assert await first == {"tok-1": {"user_id": "u-1"}}
    assert wire.accepted == 1


async def test_after_aclose_every_connection_is_closed_and_calls_are_unavailable() -> None:
    async with scripted(always(OK)) as wire:
        client = VaultClient(wire.url, 4096)
        await client.detokenize(QUERY, 2)
        await client.aclose()
        await eventually(lambda: 0 in wire.ended_by_client, "the idle connection closed")
        with pytest.raises(VaultUnavailable):
            await client.detokenize(QUERY, 2)


# --- VaultClient's errors on this transport ----------------------------------------------
@pytest.mark.parametrize(
    ("answer", "expected", "detail"),
    [
        ([head(b"Content-Length: 100\r\n") + b"[]", "close"], VaultResponseInvalid,
         "response ended early"),
        ([head(b"Content-Length: 5000\r\n")], VaultResponseInvalid, "response too large"),
        ([head() + b"[" + b" " * 5000, "close"], VaultResponseInvalid, "response too large"),
        ([b"<html>not http</html>", "close"], VaultUnavailable, None),
        ([head(b"X: " + b"a" * 40_000 + b"\r\n")], VaultUnavailable, None),
        ([head(b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n") + b"[]"],
         VaultUnavailable, None),
    ],
    ids=["ended-early", "declared-too-large", "found-too-large", "not-http", "huge-head",
         "cl-and-te"],
)
async def test_each_transport_failure_is_its_typed_vault_error(
    answer: list[Step], expected: type[Exception], detail: str | None,
) -> None:  # fmt: skip
    async with scripted(always(*answer)) as wire, client_for(wire.url) as client:
        with pytest.raises(expected) as caught:
            await client.detokenize(QUERY, 2)
    assert type(caught.value) is expected
    assert getattr(caught.value, "metadata", {}).get("detail") == detail


@pytest.mark.parametrize("stall", [[], [head(b"Content-Length: 100\r\n") + b"[{"]],
                         ids=["before-the-head", "mid-body"])
async def test_a_stalled_answer_is_a_timeout_within_the_budget(stall: list[Step]) -> None:
    async with scripted(always(*stall, "stall")) as wire, client_for(wire.url) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(VaultTimeout):
            await client.detokenize(QUERY, 0.3)
        assert asyncio.get_running_loop().time() - started < 2


async def test_a_redirect_is_a_status_not_followed() -> None:
    redirect = head(b"Location: /elsewhere\r\nContent-Length: 0\r\n", b"302 Found")
    async with scripted(always(redirect)) as wire, client_for(wire.url) as client:
        with pytest.raises(VaultUnavailable) as caught:
            await client.detokenize(QUERY, 2)
    assert caught.value.metadata == {"vault_status": "302"}
    assert len(wire.heads) == 1


async def test_a_refused_connection_is_logged_by_type_only(
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client_for(f"http://127.0.0.1:{port}") as client:
        with caplog.at_level(logging.WARNING, "piigate.vault.client"), \
                pytest.raises(VaultUnavailable):  # fmt: skip
            await client.detokenize(QUERY, 2)
    assert [r.getMessage() for r in caplog.records] == [
        "vault unreachable: ConnectFailed (ConnectionRefusedError)"]


# --- proxies --------------------------------------------------------------------------------
async def test_through_an_http_proxy_the_request_names_the_whole_url() -> None:
    async with scripted(always(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]")) as proxy:
        route = Route(yarl.URL(proxy.url), headers={"Proxy-Authorization": "Basic cDpx"})
        async with client_for("http://vault.invalid:8200", route=route) as client:
            assert await client.detokenize(QUERY, 2) == {}
    request_line, host, *rest = proxy.heads[0][1].decode().split("\r\n")
    assert request_line.startswith(
        "GET http://vault.invalid:8200/api/pvlt/1.0/data/collections/users/tokens?reason=")
    assert host == "Host: vault.invalid:8200"
    assert "Proxy-Authorization: Basic cDpx" in rest


@pytest.mark.parametrize(
    "answer",
    [[head(b"Content-Length: 0\r\nConnection: close\r\n",
           b"407 Proxy Authentication Required")],
     [b"HTTP/1.1 200 Connection established\r\n\r\nEARLY"],
     [b"not a proxy\r\n\r\n", "close"],
     ["close"]],
    ids=["407", "spoke-before-tls", "garbage", "closed"],
)
async def test_a_proxy_refusing_the_tunnel_is_vault_unavailable(answer: list[Step]) -> None:
    async with scripted(always(*answer, "close")) as proxy:
        route = Route(yarl.URL(proxy.url), proxy_headers={"Proxy-Authorization": "Basic cDpx"})
        async with client_for("https://vault.invalid:8443", route=route) as client:
            with pytest.raises(VaultUnavailable):
                await client.detokenize(QUERY, 2)
    assert proxy.heads[0][1].decode().split("\r\n")[:3] == [
        "CONNECT vault.invalid:8443 HTTP/1.1", "Host: vault.invalid:8443",
        "Proxy-Authorization: Basic cDpx"]


# --- TLS ------------------------------------------------------------------------------------
def server_context(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    ca = make_ca("vault", tmp_path)
    leaf = server_cert(ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(leaf.cert_file, leaf.key_file)
    return context, ca.cert_file


async def test_a_tls_reload_gives_new_connections_the_new_context(tmp_path: Path) -> None:
    context, ca_file = server_context(tmp_path)
    tls = VaultTls(VaultTlsFiles(ca_file, None, None))
    async with scripted(always(OK), tls=context) as wire, \
            client_for(wire.url, tls=tls) as client:  # fmt: skip
        for _ in range(2):
            assert await client.detokenize(QUERY, 5) == {"tok-1": {"user_id": "u-1"}}
        assert wire.accepted == 1  # kept alive over TLS
        before = tls.context
        ca_file.write_bytes(ca_file.read_bytes() + b"\n")  # same CA, new file: a reload
        assert tls.reload()
        assert tls.context is not before
        assert await client.detokenize(QUERY, 5) == {"tok-1": {"user_id": "u-1"}}
        assert wire.accepted == 2  # the new context's own connection
        await eventually(lambda: 0 in wire.ended_by_client, "the old context's idle one closed")


async def test_https_without_a_vault_ca_uses_the_system_roots(tmp_path: Path) -> None:
    context, _ = server_context(tmp_path)  # a test CA no system trusts
    async with scripted(always(OK), tls=context) as wire, client_for(wire.url) as client:
        with pytest.raises(VaultUnavailable) as caught:
            await client.detokenize(QUERY, 5)
    assert isinstance(caught.value.__cause__, http1.ConnectFailed)
    assert isinstance(caught.value.__cause__.__cause__, ssl.SSLCertVerificationError)


async def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    context, ca_file = server_context(tmp_path)  # the certificate names 127.0.0.1, localhost
    tls = VaultTls(VaultTlsFiles(ca_file, None, None))
    async with scripted(always(OK), host="127.0.0.2", tls=context) as wire, \
            client_for(wire.url, tls=tls) as client:  # fmt: skip
        with pytest.raises(VaultUnavailable) as caught:
            await client.detokenize(QUERY, 5)
    assert isinstance(caught.value.__cause__, http1.ConnectFailed)
    assert isinstance(caught.value.__cause__.__cause__, ssl.SSLCertVerificationError)


# --- the gateway's own loop -----------------------------------------------------------------
def test_the_same_rules_hold_on_uvloop(tmp_path: Path) -> None:
    """piigate serves on uvloop (its own create_connection and TLS): the main paths again."""
    uvloop = pytest.importorskip("uvloop")

    async def scenarios() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        await test_a_chunked_body_cut_anywhere_is_decoded_and_the_connection_kept()
        await test_an_idle_connection_the_server_closed_is_retried_once_on_a_fresh_one()
        await test_a_request_cancelled_mid_answer_closes_its_connection()
        await test_a_name_is_resolved_and_its_addresses_raced()
        await test_a_tls_reload_gives_new_connections_the_new_context(tmp_path / "reload")
        await test_a_certificate_for_another_name_is_refused(tmp_path / "name")

    uvloop.run(scenarios())
