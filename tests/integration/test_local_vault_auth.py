"""Local vault auth: missing/invalid keys, per-property and per-transformation permission."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from piigate_dev.localvault.config import load_vault_config
from tests.support.localvault import LocalVaultHandle, running_local_vault

CONFIG = """
audit = "audit.jsonl"
[[collections]]
name = "users"
type = "PERSONS"
properties = [
  {{ name = "user_id", data_type_name = "STRING", is_unique = true }},
  {{ name = "ssn", data_type_name = "SSN" }},
  {{ name = "email", data_type_name = "EMAIL" }},
]
[[collections]]
name = "orders"
properties = [{{ name = "card", data_type_name = "CC_NUMBER" }}]

[[keys]]
name = "fhir"
secret_env = "TEST_KEY_FHIR"
[[keys.policies]]
operations = ["detokenize"]
collections = ["users"]
properties = ["user_id"]
reasons = ["AppFunctionality"]

[[keys]]
name = "support"
secret_sha256 = "{support_sha}"
[[keys.policies]]
operations = ["detokenize"]
collections = ["users"]
properties = ["ssn.mask", "email.mask"]
reasons = ["AccountManagement"]
"""
USER = {"user_id": "carol-3", "ssn": "321-54-9876", "email": "carol@example.org"}


class Keys:
    def __init__(self) -> None:
        self.fhir = secrets.token_urlsafe(24)
        self.support = secrets.token_urlsafe(24)


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
async def vault(tmp_path: Path, keys: Keys) -> AsyncIterator[LocalVaultHandle]:
    path = tmp_path / "vault.toml"
    path.write_text(CONFIG.format(support_sha=hashlib.sha256(keys.support.encode()).hexdigest()))
    config = load_vault_config(path, environ={"TEST_KEY_FHIR": keys.fhir})
    async with running_local_vault(config) as handle:
        yield handle


@pytest.fixture
async def token(vault: LocalVaultHandle) -> str:
    """A pointer token for USER, created with the admin key."""
    async with aiohttp.ClientSession(headers=vault.admin_headers) as http:
        base = f"{vault.api_url}/data/collections/users"
        async with http.post(
            f"{base}/objects", params={"reason": "AppFunctionality"}, json=USER
        ) as r:
            object_id = (await r.json())["id"]
        body = [{"type": "pointer", "object": {"id": object_id}}]
        async with http.post(
            f"{base}/tokens", params={"reason": "AppFunctionality"}, json=body
        ) as r:
            return str((await r.json())[0]["token_id"])


async def call(
    vault: LocalVaultHandle,
    secret: str | None,
    method: str,
    path: str,
    params: Any = None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, vault.api_url + path, params=params, json=body) as response,
    ):
        return response.status, await response.json()


def detok(token: str, reason: str, props: str | None = None) -> dict[str, str]:
    params = {"reason": reason, "token_ids": token}
    return params if props is None else {**params, "props": props}


TOKENS = "/data/collections/users/tokens"


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "PV1005"),
        ("Basic abc", "PV1005"),
        ("Bearer ", "PV1005"),
        ("Bearer wrong-key", "PV1006"),
    ],
)
async def test_unauthenticated(
    vault: LocalVaultHandle, authorization: str | None, code: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with aiohttp.ClientSession(headers=headers) as http:
        for method, path in (
            ("GET", TOKENS),
            ("GET", "/ctl/collections"),
            ("POST", "/data/collections/users/objects"),
        ):
            async with http.request(
                method, vault.api_url + path, params={"reason": "Analytics"}
            ) as response:
                body = await response.json()
                assert (response.status, body["error_code"]) == (401, code)


async def test_dev_key_is_gone_when_keys_are_configured(vault: LocalVaultHandle) -> None:
    status, body = await call(vault, "pvaultauth", "GET", "/ctl/collections")
    assert (status, body["error_code"]) == (401, "PV1006")


async def test_key_limited_to_one_property(vault: LocalVaultHandle, keys: Keys, token: str) -> None:
    status, body = await call(
        vault, keys.fhir, "GET", TOKENS, detok(token, "AppFunctionality", "user_id")
    )
    assert (status, body[0]["fields"]) == (200, {"user_id": "carol-3"})
    for props in ("ssn", "user_id,email", None):  # None: every property behind the token
        status, body = await call(
            vault, keys.fhir, "GET", TOKENS, detok(token, "AppFunctionality", props)
        )
        assert (status, body["error_code"]) == (403, "PV1007")
        assert "321-54-9876" not in json.dumps(body)
    status, body = await call(vault, keys.fhir, "GET", TOKENS, detok(token, "Marketing", "user_id"))
    assert (status, body["error_code"], body["context"]["reason"]) == (403, "PV1007", "Marketing")


async def test_key_allowed_the_mask_but_not_the_value(
    vault: LocalVaultHandle, keys: Keys, token: str
) -> None:
    params = detok(token, "AccountManagement", "ssn.mask,email.mask")
    status, body = await call(vault, keys.support, "GET", TOKENS, params)
    assert (status, body[0]["fields"]) == (
        200,
        {"ssn.mask": "***-**-9876", "email.mask": "c***@example.org"},
    )
    status, body = await call(
        vault, keys.support, "GET", TOKENS, detok(token, "AccountManagement", "ssn")
    )
    assert (status, body["error_code"], body["context"]["property"]) == (403, "PV1007", "ssn")


async def test_operations_outside_the_policy(
    vault: LocalVaultHandle, keys: Keys, token: str
) -> None:
    item = [{"type": "pci", "object": {"fields": {"ssn": "111-22-3333"}}}]
    status, body = await call(
        vault, keys.fhir, "POST", TOKENS, {"reason": "AppFunctionality"}, item
    )
    assert (status, body["error_code"]) == (403, "PV1007")
    status, body = await call(
        vault,
        keys.fhir,
        "POST",
        "/data/collections/users/objects",
        {"reason": "AppFunctionality"},
        USER,
    )
    assert (status, body["error_code"]) == (403, "PV1007")
    rotate = {"reason": "AppFunctionality", "token_ids": token}
    status, body = await call(
        vault, keys.fhir, "POST", "/data/collections/users/rotate/tokens", rotate
    )
    assert (status, body["error_code"]) == (403, "PV1007")
    orders = {"name": "more", "properties": [{"name": "x", "data_type_name": "STRING"}]}
    status, body = await call(vault, keys.fhir, "POST", "/ctl/collections", body=orders)
    assert (status, body["error_code"]) == (403, "PV1007")


async def test_invisible_collections_look_missing(vault: LocalVaultHandle, keys: Keys) -> None:
    params = {"reason": "AppFunctionality", "token_ids": "x"}
    invisible = await call(vault, keys.fhir, "GET", "/data/collections/orders/tokens", params)
    missing = await call(vault, keys.fhir, "GET", "/data/collections/nothing/tokens", params)
    assert invisible[0] == missing[0] == 404
    assert invisible[1]["error_code"] == missing[1]["error_code"] == "PV1004"
    status, body = await call(vault, keys.fhir, "GET", "/ctl/collections")
    assert [c["name"] for c in body] == ["users"]
    status, body = await call(vault, keys.fhir, "GET", "/ctl/collections/orders")
    assert (status, body["error_code"]) == (404, "PV1004")


async def test_denials_are_audited_without_values(
    tmp_path: Path, vault: LocalVaultHandle, keys: Keys, token: str
) -> None:
    await call(vault, keys.support, "GET", TOKENS, detok(token, "AccountManagement", "ssn"))
    await call(vault, keys.support, "GET", TOKENS, detok(token, "AccountManagement", "ssn.mask"))
    text = (tmp_path / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    support = [line for line in lines if line["key"] == "support"]
    assert [(line["outcome"], line["props"]) for line in support] == [
        ("denied", ["ssn"]),
        ("ok", ["ssn.mask"]),
    ]
    for value in [*USER.values(), "***-**-9876"]:
        assert value not in text
