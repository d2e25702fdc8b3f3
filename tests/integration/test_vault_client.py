"""The vault stage against a real HTTP server on loopback that misbehaves on request:
every failure maps to its typed error, and nothing from the answer leaks into one."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from piigate.errors import (
    GatewayError,
    VaultAccessDenied,
    VaultMisconfigured,
    VaultResponseInvalid,
    VaultTimeout,
    VaultUnavailable,
)
from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate.vault.client import DetokenizeQuery, VaultClient

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StartVault = Callable[[Handler], Awaitable[VaultClient]]
SECRET_VALUE = "123-45-6789"
QUERY = DetokenizeQuery(
    collection="users", token_ids=("tok-1",), props=("user_id", "ssn.mask"),
    reason="AppFunctionality", adhoc_reason=None, api_key="vault-key-xyz",
    custom_audit="piigate request r1",
)


@pytest.fixture
async def vault() -> AsyncIterator[StartVault]:
    runners: list[web.AppRunner] = []
    clients: list[VaultClient] = []

    async def start(handler: Handler) -> VaultClient:
        app = web.Application()
        app.router.add_get("/api/pvlt/1.0/data/collections/{c}/tokens", handler)
        runner, url = await start_http_app(app, ListenAddress("127.0.0.1", 0))
        runners.append(runner)
        clients.append(client := VaultClient(url, max_response_bytes=4096))
        return client

    yield start
    for client in clients:
        await client.aclose()
    for runner in runners:
        await runner.cleanup()


async def test_sends_piianos_detokenize_and_parses_the_answer(vault: StartVault) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["collection"] = request.match_info["c"]
        seen["auth"] = request.headers["Authorization"]
        seen["query"] = list(request.query.items())
        return web.json_response(
            [{"token_id": "tok-1", "fields": {"user_id": "u-1", "ssn.mask": "***-**-6789"}}]
        )

    client = await vault(handler)
    found = await client.detokenize(QUERY, timeout_s=2)
    assert found == {"tok-1": {"user_id": "u-1", "ssn.mask": "***-**-6789"}}
    assert seen["collection"] == "users"
    assert seen["auth"] == "Bearer vault-key-xyz"
    assert seen["query"] == [
        ("reason", "AppFunctionality"), ("custom_audit", "piigate request r1"),
        ("token_ids", "tok-1"), ("props", "user_id"), ("props", "ssn.mask"),
    ]


async def test_no_match_is_an_empty_answer_not_an_error(vault: StartVault) -> None:
    client = await vault(_json([]))
    assert await client.detokenize(QUERY, timeout_s=2) == {}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (403, "PV1006", VaultAccessDenied),
        (401, "PV1005", VaultMisconfigured),
        (404, "PV1004", VaultMisconfigured),
        (400, "PV1012", VaultMisconfigured),
        (429, "PV1020", VaultUnavailable),
        (500, "PV1010", VaultUnavailable),
        (503, "PV1010", VaultUnavailable),
        (500, "PV1009", VaultTimeout),
    ],
)
async def test_error_statuses_map_to_typed_errors(
    vault: StartVault, status: int, code: str, expected: type[GatewayError]
) -> None:
    body = {"error_code": code, "message": f"value {SECRET_VALUE} refused", "context": {}}
    client = await vault(_json(body, status))
    with pytest.raises(expected) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert type(caught.value) is expected
    assert caught.value.metadata["vault_status"] == str(status)
    assert caught.value.metadata["vault_error_code"] == code
    assert SECRET_VALUE not in repr(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway error</html>",
        b'{"token_id": "tok-1"}',
        b'[{"token_id": "tok-1"}]',
        b'[{"fields": {}}]',
        b'["tok-1"]',
        b'[{"token_id": "someone-else", "fields": {"ssn": "' + SECRET_VALUE.encode() + b'"}}]',
        b"[" + b" " * 5000 + b"]",
        b"[" * 3000,  # under the cap, nested too deep for a recursive parser
        b'[{"token_id": "tok-1", "fields": {"ssn": NaN}}]',
        b'[{"token_id": "tok-1", "fields": {"ssn": "a"}, "fields": {"ssn": "b"}}]',
    ],
)
async def test_garbage_is_refused_whole(vault: StartVault, body: bytes) -> None:
    client = await vault(_raw(body))
    with pytest.raises(VaultResponseInvalid) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert SECRET_VALUE not in repr(caught.value)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[" * 3000, "nesting too deep"),
        (b'[{"token_id": "tok-1", "fields": {"a": 1, "a": 2}}]', "duplicate member"),
        (b'[{"token_id": "tok-1", "fields": {"ssn": "' + SECRET_VALUE.encode() + b'"}},'
         b' {"token_id": "tok-1", "fields": {"ssn": "987-65-4321"}}]',
         "conflicting duplicate token"),
    ],
    ids=["nesting", "duplicate-member", "conflicting-duplicate"],
)
async def test_each_refusal_says_which_rule_in_its_metadata(
    vault: StartVault, body: bytes, detail: str
) -> None:
    client = await vault(_raw(body))
    with pytest.raises(VaultResponseInvalid) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert caught.value.metadata == {"detail": detail}


async def test_identical_duplicates_are_one_record(vault: StartVault) -> None:
    record = {"token_id": "tok-1", "fields": {"user_id": "u-1"}}
    client = await vault(_json([record, dict(record)]))
    assert await client.detokenize(QUERY, timeout_s=2) == {"tok-1": {"user_id": "u-1"}}


@pytest.mark.parametrize("pieces", [2, 5])
async def test_an_answer_without_length_in_pieces_is_read_whole(
    vault: StartVault, pieces: int
) -> None:
    body = json.dumps([{"token_id": "tok-1", "fields": {"user_id": "u-1" * 200}}]).encode()
    client = await vault(_in_pieces(body, pieces))
    assert await client.detokenize(QUERY, timeout_s=2) == {"tok-1": {"user_id": "u-1" * 200}}


async def test_an_answer_without_length_over_the_cap_is_refused(vault: StartVault) -> None:
    body = b'[{"token_id": "tok-1", "fields": {"a": "' + b"x" * 5000 + b'"}}]'
    client = await vault(_in_pieces(body, 10))
    with pytest.raises(VaultResponseInvalid) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert caught.value.metadata == {"detail": "response too large"}


async def test_an_error_body_is_read_strictly_and_never_crashes(vault: StartVault) -> None:
    client = await vault(_raw(b"[" * 3000, 503))
    with pytest.raises(VaultUnavailable) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert caught.value.metadata == {"vault_status": "503"}


async def test_a_504_is_a_timeout_whatever_its_body(vault: StartVault) -> None:
    """The vault's own gateway gave up waiting: VAULT_TIMEOUT, not VAULT_UNAVAILABLE."""
    client = await vault(_raw(b"<html>504 Gateway Time-out</html>", 504))
    with pytest.raises(VaultTimeout) as caught:
        await client.detokenize(QUERY, timeout_s=2)
    assert caught.value.metadata == {"vault_status": "504"}


async def test_a_slow_vault_times_out_within_the_budget(vault: StartVault) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response([])

    client = await vault(slow)
    with pytest.raises(VaultTimeout):
        await asyncio.wait_for(client.detokenize(QUERY, timeout_s=0.2), timeout=3)


async def test_a_vault_that_is_down_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = VaultClient(f"http://127.0.0.1:{port}", 4096)
    with pytest.raises(VaultUnavailable):
        await client.detokenize(QUERY, timeout_s=2)
    await client.aclose()


def _json(body: object, status: int = 200) -> Handler:
    return _raw(json.dumps(body).encode(), status)


def _in_pieces(body: bytes, pieces: int) -> Handler:
    """`body` chunked (no Content-Length), in `pieces` writes 20 ms apart."""
    size = -(-len(body) // pieces)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), size):
            await response.write(body[start:start + size])
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    return handler


def _raw(body: bytes, status: int = 200) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/json")

    return handler
