"""Numbers too large for a float, against the real local vault on 127.0.0.1:0.

JSON numbers have no size limit, and Python reads 309 nines as an exact int, which
overflows the moment it meets a float (math.isfinite, `now + seconds`). Each such request
gets the vault's documented 400 answer, never a bare 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.schema import parse_collection
from tests.support.localvault import LocalVaultHandle, running_local_vault

MEASURES, _ = parse_collection({
    "name": "measures",
    "type": "DATA",
    "properties": [
        {"name": "label", "data_type_name": "STRING"},
        {"name": "weight", "data_type_name": "DOUBLE", "is_nullable": True},
    ],
})  # fmt: skip
assert MEASURES is not None
APP = {"reason": "AppFunctionality"}
HUGE = "9" * 309  # beyond the largest double (about 1.8e308)


@pytest.fixture
async def vault() -> AsyncIterator[LocalVaultHandle]:
    async with running_local_vault(VaultConfig(collections=(MEASURES,))) as handle:
        yield handle


async def post(
    vault: LocalVaultHandle, path: str, params: dict[str, str], body: str
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=vault.admin_headers) as http,
        http.post(f"{vault.api_url}/data/collections/measures/{path}", params=params,
                  data=body) as response,
    ):
        return response.status, json.loads(await response.text())


async def test_a_309_digit_double_is_an_invalid_value(vault: LocalVaultHandle) -> None:
    status, body = await post(vault, "objects", APP, f'{{"label": "a", "weight": {HUGE}}}')
    assert (status, body["error_code"]) == (400, "PV3003")
    assert body["context"] == {"property": "weight", "data_type": "DOUBLE"}


async def test_a_309_digit_double_in_a_token_is_an_invalid_value(
    vault: LocalVaultHandle,
) -> None:
    item = f'[{{"type": "randomized", "object": {{"fields": {{"label": "a", "weight": {HUGE}}}}}}}]'
    status, body = await post(vault, "tokens", APP, item)
    assert (status, body["error_code"]) == (400, "PV3003")


async def test_a_309_digit_expiration_is_an_invalid_request(vault: LocalVaultHandle) -> None:
    item = '[{"type": "randomized", "object": {"fields": {"label": "a"}}}]'
    status, body = await post(vault, "tokens", {**APP, "expiration_secs": HUGE}, item)
    assert (status, body["error_code"]) == (400, "PV1012")
    assert body["context"]["parameter"] == "expiration_secs"


async def test_ordinary_numbers_still_work(vault: LocalVaultHandle) -> None:
    status, _ = await post(vault, "objects", APP, '{"label": "a", "weight": 1e308}')
    assert status == 200
    item = '[{"type": "randomized", "object": {"fields": {"label": "a", "weight": 72.5}}}]'
    status, _ = await post(vault, "tokens", {**APP, "expiration_secs": "3600"}, item)
    assert status == 200
