"""The local vault's REST API against the real server on 127.0.0.1:0, admin key.

Covers collections, objects, every token type, detokenize selection rules, expiry (with a
fake clock), both list encodings, reasons, and every error path with its status and code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from piigate_dev.localvault.boundary import VAULT
from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.schema import parse_collection
from tests.support.localvault import LocalVaultHandle, running_local_vault

USERS_DEFINITION: dict[str, Any] = {
    "name": "users",
    "type": "PERSONS",
    "properties": [
        {"name": "user_id", "data_type_name": "STRING", "is_unique": True},
        {"name": "ssn", "data_type_name": "SSN"},
        {"name": "email", "data_type_name": "EMAIL", "is_nullable": True},
        {"name": "vip", "data_type_name": "BOOLEAN", "is_nullable": True},
    ],
}
USERS, _ = parse_collection(USERS_DEFINITION)
assert USERS is not None
APP = {"reason": "AppFunctionality"}
ALICE = {"user_id": "alice-1", "ssn": "123-12-1234", "email": "alice@example.com", "vip": True}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def vault(clock: Clock) -> AsyncIterator[LocalVaultHandle]:
    config = VaultConfig(collections=(USERS,), max_body_bytes=4096)
    async with running_local_vault(config, clock=clock) as handle:
        yield handle


@pytest.fixture
async def http(vault: LocalVaultHandle) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=vault.admin_headers) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    params: Any = None,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    """One request; the status and the decoded JSON answer (None when empty)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body))
    async with http.request(method, url, params=params, data=data) as response:
        text = await response.text()
        assert "Traceback" not in text
        return response.status, json.loads(text) if text else None


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert (status, body["error_code"]) == (expected_status, code)
    assert set(body) == {"error_code", "message", "context"}


async def add_user(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, user: dict[str, Any]
) -> str:
    status, body = await call(
        http, "POST", f"{vault.api_url}/data/collections/users/objects", APP, user
    )
    assert status == 200, body
    return str(body["id"])


async def tokenize(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, items: list[dict[str, Any]], **params: str
) -> list[str]:
    url = f"{vault.api_url}/data/collections/users/tokens"
    status, body = await call(http, "POST", url, {**APP, **params}, items)
    assert status == 200, body
    return [entry["token_id"] for entry in body]


async def detokenize(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, params: Any
) -> tuple[int, Any]:
    url = f"{vault.api_url}/data/collections/users/tokens"
    return await call(http, "GET", url, [("reason", "AppFunctionality"), *params])


async def test_health_and_version_need_no_key(vault: LocalVaultHandle) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for path in ("/data/info/health", "/ctl/info/health"):
            assert await call(anonymous, "GET", vault.api_url + path) == (200, {"status": "pass"})
        status, body = await call(anonymous, "GET", vault.api_url + "/system/info/version")
        assert status == 200
        assert "vault_version" in body


async def test_collections_create_get_list(
    http: aiohttp.ClientSession, vault: LocalVaultHandle
) -> None:
    orders = {
        "name": "orders",
        "type": "DATA",
        "properties": [{"name": "card", "data_type_name": "CC_NUMBER"}],
    }
    status, body = await call(http, "POST", f"{vault.api_url}/ctl/collections", body=orders)
    assert status == 200
    assert body["properties"][0]["is_encrypted"] is True
    status, body = await call(http, "GET", f"{vault.api_url}/ctl/collections/orders")
    assert (status, body["name"], body["type"]) == (200, "orders", "DATA")
    status, body = await call(http, "GET", f"{vault.api_url}/ctl/collections")
    assert sorted(c["name"] for c in body) == ["orders", "users"]
    assert_error(
        *await call(http, "POST", f"{vault.api_url}/ctl/collections", body=orders), 409, "PV3001"
    )
    bad = {"name": "bad", "properties": [{"name": "x", "data_type_name": "NOPE"}]}
    status, body = await call(http, "POST", f"{vault.api_url}/ctl/collections", body=bad)
    assert_error(status, body, 400, "PV1012")
    assert body["context"]["field"] == "properties[0].data_type_name"
    assert_error(*await call(http, "GET", f"{vault.api_url}/ctl/collections/nope"), 404, "PV1004")


async def test_objects_add_and_get_with_props_and_mask(
    http: aiohttp.ClientSession, vault: LocalVaultHandle
) -> None:
    object_id = await add_user(http, vault, ALICE)
    url = f"{vault.api_url}/data/collections/users/objects/{object_id}"
    assert await call(http, "GET", url, APP) == (200, ALICE)
    status, body = await call(http, "GET", url, {**APP, "props": "ssn.mask,email.mask,user_id"})
    assert (status, body) == (
        200,
        {"ssn.mask": "***-**-1234", "email.mask": "a***@example.com", "user_id": "alice-1"},
    )
    status, body = await call(
        http, "GET", url, [*APP.items(), ("props", "ssn"), ("props", "ssn.mask")]
    )
    assert body == {"ssn": "123-12-1234", "ssn.mask": "***-**-1234"}
    assert_error(*await call(http, "GET", url, {**APP, "props": "vip.mask"}), 400, "PV3005")
    assert_error(*await call(http, "GET", url, {**APP, "props": "shoe"}), 400, "PV3002")
    missing = f"{vault.api_url}/data/collections/users/objects/00000000-0000-0000-0000-000000000000"
    assert_error(*await call(http, "GET", missing, APP), 404, "PV3004")


@pytest.mark.parametrize(
    ("user", "code"),
    [
        ({**ALICE, "ssn": "12-34"}, "PV3003"),
        ({**ALICE, "email": "not-an-email"}, "PV3003"),
        ({**ALICE, "vip": "yes"}, "PV3003"),
        ({**ALICE, "user_id": 7}, "PV3003"),
        ({**ALICE, "shoe_size": 44}, "PV3002"),
        ({"user_id": "x", "email": "x@example.com"}, "PV3006"),
    ],
)
async def test_objects_are_validated_without_echoing_values(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, user: dict[str, Any], code: str
) -> None:
    status, body = await call(
        http, "POST", f"{vault.api_url}/data/collections/users/objects", APP, user
    )
    assert_error(status, body, 400, code)
    text = json.dumps(body)
    assert all(
        str(value) not in text
        for value in user.values()
        if isinstance(value, str) and len(value) > 3
    )


async def test_unique_property(http: aiohttp.ClientSession, vault: LocalVaultHandle) -> None:
    await add_user(http, vault, ALICE)
    url = f"{vault.api_url}/data/collections/users/objects"
    status, body = await call(http, "POST", url, APP, {**ALICE, "ssn": "999-99-9999"})
    assert_error(status, body, 409, "PV3007")
    assert body["context"] == {"property": "user_id"}


async def test_every_token_type(http: aiohttp.ClientSession, vault: LocalVaultHandle) -> None:
    object_id = await add_user(http, vault, ALICE)
    fields = {"ssn": "555-55-5555"}
    pointer, randomized, det1, det2, pci, det_other = await tokenize(
        http,
        vault,
        [
            {"type": "pointer", "object": {"id": object_id}, "props": ["ssn", "email"]},
            {"type": "randomized", "object": {"fields": fields}},
            {"type": "deterministic", "object": {"fields": fields}},
            {"type": "deterministic", "object": {"fields": fields}},
            {"type": "pci", "object": {"id": object_id}, "props": ["ssn"]},
            {"type": "deterministic", "object": {"fields": {"ssn": "555-55-5556"}}},
        ],
    )
    assert det1 == det2  # same fields, same token id
    assert det_other != det1
    (randomized_again,) = await tokenize(
        http, vault, [{"type": "randomized", "object": {"fields": fields}}]
    )
    assert randomized_again != randomized
    status, body = await detokenize(
        http, vault, [("token_ids", t) for t in (pointer, randomized, det1, pci)]
    )
    assert status == 200
    assert [entry["token_id"] for entry in body] == [pointer, randomized, det1, pci]
    assert [entry["fields"] for entry in body] == [
        {"ssn": "123-12-1234", "email": "alice@example.com"},
        fields,
        fields,
        {"ssn": "123-12-1234"},
    ]


async def test_pci_oneway_is_stored_but_refused(
    http: aiohttp.ClientSession, vault: LocalVaultHandle
) -> None:
    (token,) = await tokenize(
        http, vault, [{"type": "pci_oneway", "object": {"fields": {"ssn": "555-55-5555"}}}]
    )
    status, body = await detokenize(http, vault, [("token_ids", token)])
    assert_error(status, body, 400, "PV3008")
    assert "555-55-5555" not in json.dumps(body)


async def test_detokenize_selection_rules(
    http: aiohttp.ClientSession, vault: LocalVaultHandle
) -> None:
    alice = await add_user(http, vault, ALICE)
    bob = await add_user(http, vault, {**ALICE, "user_id": "bob-2", "ssn": "222-22-2222"})
    t_alice, t_bob, t_alice2 = await tokenize(
        http,
        vault,
        [
            {"type": "pointer", "object": {"id": alice}, "tags": ["sub:alice", "fhir"]},
            {"type": "pointer", "object": {"id": bob}, "tags": ["sub:bob", "fhir"]},
            {"type": "pci", "object": {"id": alice}, "props": ["ssn"], "tags": ["sub:alice"]},
        ],
    )

    async def ids(params: list[tuple[str, str]]) -> list[str]:
        status, body = await detokenize(http, vault, params)
        assert status == 200, body
        return [entry["token_id"] for entry in body]

    assert await ids([("token_ids", t_alice), ("token_ids", "unknown-id")]) == [t_alice]
    assert await ids([("token_ids", f"{t_bob},{t_alice}")]) == [t_bob, t_alice]  # comma form
    assert await ids([("object_ids", alice)]) == [t_alice, t_alice2]
    assert await ids([("object_ids", f"{alice},{bob}"), ("tags", "fhir")]) == [t_alice, t_bob]
    assert await ids([("tags", "sub:alice")]) == [t_alice, t_alice2]
    assert await ids([("tags", "sub:alice"), ("tags", "fhir")]) == [t_alice]  # every tag
    assert await ids([("tags", "sub:alice,fhir")]) == [t_alice]
    # The binding check: a token asked for with someone else's tag is not answered.
    assert await ids([("token_ids", t_bob), ("tags", "sub:alice")]) == []
    assert await ids([("token_ids", t_alice), ("object_ids", bob)]) == []
    assert await ids([("tags", "nobody")]) == []
    status, body = await detokenize(http, vault, [("props", "ssn")])
    assert_error(status, body, 400, "PV1012")


async def test_detokenize_props_mask_and_metadata(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, clock: Clock
) -> None:
    alice = await add_user(http, vault, ALICE)
    (token,) = await tokenize(
        http,
        vault,
        [{"type": "pointer", "object": {"id": alice}, "tags": ["t1"]}],
        expiration_secs="60",
    )
    status, body = await detokenize(
        http,
        vault,
        [
            ("token_ids", token),
            ("props", "ssn.mask"),
            ("props", "user_id"),
            ("options", "include_metadata"),
        ],
    )
    assert status == 200
    assert body[0]["fields"] == {"ssn.mask": "***-**-1234", "user_id": "alice-1"}
    metadata = body[0]["metadata"]
    assert metadata["type"] == "pointer"
    assert metadata["tags"] == ["t1"]
    assert metadata["object_id"] == alice
    assert metadata["expiration_time"] == "2027-01-15T08:01:00Z"
    status, body = await detokenize(http, vault, [("token_ids", token)])
    assert "metadata" not in body[0]
    assert_error(
        *await detokenize(http, vault, [("token_ids", token), ("props", "vip.mask")]), 400, "PV3005"
    )


async def test_expired_tokens_act_as_absent(
    http: aiohttp.ClientSession, vault: LocalVaultHandle, clock: Clock
) -> None:
    item = {"type": "pci", "object": {"fields": {"ssn": "555-55-5555"}}}
    (short,) = await tokenize(http, vault, [item], expiration_secs="60")
    (forever,) = await tokenize(http, vault, [item], expiration_secs="-1")
    clock.now += 59
    assert len((await detokenize(http, vault, [("token_ids", f"{short},{forever}")]))[1]) == 2
    clock.now += 2
    status, body = await detokenize(http, vault, [("token_ids", f"{short},{forever}")])
    assert [entry["token_id"] for entry in body] == [forever]
    url = f"{vault.api_url}/data/collections/users/tokens"
    status, body = await call(http, "POST", url, {**APP, "expiration_secs": "0"}, [item])
    assert_error(status, body, 400, "PV1012")


async def test_tokenize_is_all_or_nothing(
    http: aiohttp.ClientSession, vault: LocalVaultHandle
) -> None:
    alice = await add_user(http, vault, ALICE)
    url = f"{vault.api_url}/data/collections/users/tokens"
    items = [
        {"type": "pointer", "object": {"id": alice}, "tags": ["batch"]},
        {
            "type": "pointer",
            "object": {"id": "11111111-1111-1111-1111-111111111111"},
            "tags": ["batch"],
        },
    ]
    assert_error(*await call(http, "POST", url, APP, items), 404, "PV3004")
    assert await detokenize(http, vault, [("tags", "batch")]) == (200, [])
    await tokenize(http, vault, [{**items[0], "token_id": "chosen_1"}])
    status, body = await call(http, "POST", url, APP, [{**items[0], "token_id": "chosen_1"}])
    assert_error(status, body, 409, "PV3009")


async def test_rotate_and_delete(http: aiohttp.ClientSession, vault: LocalVaultHandle) -> None:
    item = {"type": "pci", "object": {"fields": {"ssn": "555-55-5555"}}}
    first, second = await tokenize(http, vault, [item, item])
    url = f"{vault.api_url}/data/collections/users"
    status, renamed = await call(
        http,
        "POST",
        f"{url}/rotate/tokens",
        [*APP.items(), ("token_ids", first), ("token_ids", "nope")],
    )
    assert status == 200
    assert list(renamed) == [first]
    assert await detokenize(http, vault, [("token_ids", first)]) == (200, [])
    status, body = await detokenize(http, vault, [("token_ids", renamed[first])])
    assert body[0]["fields"] == {"ssn": "555-55-5555"}
    status, body = await call(
        http, "DELETE", f"{url}/tokens", {**APP, "token_ids": f"{second},{renamed[first]}"}
    )
    assert status == 200
    assert await detokenize(http, vault, [("token_ids", f"{second},{renamed[first]}")]) == (200, [])


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "PV1001"),
        ({"reason": "JustBecause"}, 400, "PV1002"),
        ({"reason": "Other"}, 400, "PV1003"),
        ({"reason": "Other", "adhoc_reason": "incident 12"}, 200, None),
        ({"reason": "Maintenance", "custom_audit": "run-7"}, 200, None),
    ],
)
async def test_reason_rules(
    http: aiohttp.ClientSession,
    vault: LocalVaultHandle,
    params: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    url = f"{vault.api_url}/data/collections/users/tokens"
    got_status, body = await call(http, "GET", url, {**params, "token_ids": "x"})
    if code is None:
        assert (got_status, body) == (200, [])
    else:
        assert_error(got_status, body, status, code)


@pytest.mark.parametrize(
    ("method", "path", "raw", "status", "code"),
    [
        ("POST", "/data/collections/users/objects?reason=Analytics", b"{not json", 400, "PV1012"),
        ("POST", "/data/collections/users/objects?reason=Analytics", b"[1, 2]", 400, "PV1012"),
        (
            "POST",
            "/data/collections/users/tokens?reason=Analytics",
            b'{"type": "pci"}',
            400,
            "PV1012",
        ),
        ("POST", "/data/collections/users/objects?reason=Analytics", b"[" * 5000, 413, "PV1013"),
        ("GET", "/data/collections/nope/tokens?reason=Analytics&token_ids=a", None, 404, "PV1004"),
        ("POST", "/ctl/collections", b"x" * 10_000, 413, "PV1013"),
        ("GET", "/data/nowhere", None, 404, "PV1008"),
        ("GET", "/../../etc/passwd", None, 404, "PV1008"),
        ("PUT", "/data/collections/users/tokens?reason=Analytics", None, 405, "PV1011"),
        ("PATCH", "/ctl/collections", None, 405, "PV1011"),
    ],
)
async def test_error_paths(
    http: aiohttp.ClientSession,
    vault: LocalVaultHandle,
    method: str,
    path: str,
    raw: bytes | None,
    status: int,
    code: str,
) -> None:
    assert_error(*await call(http, method, vault.api_url + path, raw=raw), status, code)


async def test_unexpected_failure_is_a_bare_500(
    http: aiohttp.ClientSession,
    vault: LocalVaultHandle,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("value 123-12-1234 leaked")

    monkeypatch.setattr(vault.app[VAULT].store, "find_tokens", explode)
    with caplog.at_level(logging.ERROR):
        status, body = await detokenize(http, vault, [("token_ids", "x")])
    assert_error(status, body, 500, "PV1000")
    assert body["context"] == {}
    assert "123-12-1234" not in json.dumps(body)
    assert "RuntimeError" in caplog.text
    assert "123-12-1234" not in caplog.text
