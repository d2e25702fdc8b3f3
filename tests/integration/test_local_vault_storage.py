"""Local vault storage: restarts lose nothing, nothing is stored or audited in clear."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from piigate_dev.localvault.app import create_vault_app
from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.database import WrongDataKey
from piigate_dev.localvault.datakey import DataKeyFileError
from piigate_dev.localvault.schema import CollectionSpec, PropertySpec
from tests.support.localvault import LocalVaultHandle, running_local_vault

USERS = CollectionSpec(
    "users",
    "PERSONS",
    (
        PropertySpec("user_id", "STRING", is_unique=True),
        PropertySpec("ssn", "SSN"),
        PropertySpec("email", "EMAIL"),
    ),
)
# Distinctive values, so finding them in a file cannot be a coincidence.
SEEDED = [
    {
        "user_id": f"zq-user-{i}-plain",
        "ssn": f"87{i}-65-4321",
        "email": f"zq.person{i}@plaintext.test",
    }
    for i in range(5)
]
REASON = {"reason": "AppFunctionality", "custom_audit": "x" * 1000}


async def seed(vault: LocalVaultHandle) -> list[str]:
    """Store SEEDED and give each a pointer and a pci token; the token ids."""
    tokens: list[str] = []
    async with aiohttp.ClientSession(headers=vault.admin_headers) as http:
        base = f"{vault.api_url}/data/collections/users"
        for user in SEEDED:
            async with http.post(f"{base}/objects", params=REASON, json=user) as response:
                object_id = (await response.json())["id"]
            body = [
                {"type": "pointer", "object": {"id": object_id}, "tags": ["seed"]},
                {"type": "pci", "object": {"fields": {"ssn": user["ssn"]}}, "tags": ["seed"]},
            ]
            async with http.post(f"{base}/tokens", params=REASON, json=body) as response:
                tokens += [entry["token_id"] for entry in await response.json()]
    return tokens


async def detokenize_all(vault: LocalVaultHandle, tokens: list[str]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=vault.admin_headers) as http:
        params = [("reason", "AppFunctionality"), *(("token_ids", t) for t in tokens)]
        async with http.get(
            f"{vault.api_url}/data/collections/users/tokens", params=params
        ) as response:
            assert response.status == 200
            return list(await response.json())


def file_config(tmp_path: Path, key: bytes | None) -> VaultConfig:
    return VaultConfig(
        data_path=str(tmp_path / "vault.db"),
        data_key=key,
        audit_path=str(tmp_path / "audit.jsonl"),
        collections=(USERS,),
    )


def raw_bytes(tmp_path: Path) -> bytes:
    """Every byte SQLite left on disk: the database and any WAL/SHM files."""
    return b"".join(
        path.read_bytes() for path in sorted(tmp_path.glob("vault.db*")) if path.suffix != ".key"
    )


async def test_restart_keeps_everything(tmp_path: Path) -> None:
    config = file_config(tmp_path, os.urandom(32))
    async with running_local_vault(config) as vault:
        tokens = await seed(vault)
        before = await detokenize_all(vault, tokens)
    async with running_local_vault(config) as vault:
        after = await detokenize_all(vault, tokens)
        async with (
            aiohttp.ClientSession(headers=vault.admin_headers) as http,
            http.get(f"{vault.api_url}/ctl/collections/users") as response,
        ):
            assert response.status == 200
    assert len(before) == len(SEEDED) * 2
    assert after == before
    assert after[0]["fields"] == SEEDED[0]


async def test_nothing_in_clear_on_disk_or_in_the_audit_log(tmp_path: Path) -> None:
    config = file_config(tmp_path, os.urandom(32))
    async with running_local_vault(config) as vault:
        tokens = await seed(vault)
        await detokenize_all(vault, tokens)
        on_disk_while_running = raw_bytes(tmp_path)
    on_disk = raw_bytes(tmp_path) + on_disk_while_running
    assert b"users" in on_disk  # the check reads the right files
    audit = (tmp_path / "audit.jsonl").read_text()
    for user in SEEDED:
        for value in user.values():
            for encoded in (value.encode(), value.encode("utf-16-le")):
                assert encoded not in on_disk
            assert value not in audit
    records = [json.loads(line) for line in audit.splitlines()]
    assert [r["operation"] for r in records].count("add_object") == len(SEEDED)
    seeding = [r for r in records if r["operation"] != "detokenize"]
    assert all(len(r["custom_audit"]) == 256 for r in seeding)  # capped
    detok = [r for r in records if r["operation"] == "detokenize"]
    assert detok[0]["token_ids"] == tokens
    assert detok[0]["props"] == ["email", "ssn", "user_id"]


async def test_wrong_key_is_refused(tmp_path: Path) -> None:
    async with running_local_vault(file_config(tmp_path, os.urandom(32))) as vault:
        await seed(vault)
    with pytest.raises(WrongDataKey):
        await create_vault_app(file_config(tmp_path, os.urandom(32)))


async def test_development_key_file(tmp_path: Path) -> None:
    config = dataclasses.replace(file_config(tmp_path, None), collections=(USERS,))
    warnings: list[str] = []
    app = await create_vault_app(config, warn=warnings.append)
    await app.cleanup()
    key_file = tmp_path / "vault.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32
    assert "development only" in warnings[0]
    async with running_local_vault(config) as vault:  # reused: the data still opens
        tokens = await seed(vault)
    async with running_local_vault(config) as vault:
        assert len(await detokenize_all(vault, tokens)) == len(tokens)
    key_file.write_text("garbage")
    with pytest.raises(DataKeyFileError):
        await create_vault_app(config, warn=warnings.append)
