"""The real vault client against the real local vault, through a proxy that breaks the
wire (`tests.support.faultproxy`): each fault ends in exactly one typed error or in the
right answer, within the call's budget. Two tests go through the whole gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from piigate.errors import (
    GatewayError,
    VaultResponseInvalid,
    VaultTimeout,
    VaultUnavailable,
)
from piigate.vault.client import DetokenizeQuery, VaultClient
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.schema import CollectionSpec, parse_collection
from tests.support.faultproxy import Fault, FaultProxy, running_fault_proxy
from tests.support.localvault import running_local_vault
from tests.support.stack import running_stack

_SPEC, _ = parse_collection({
    "name": "users",
    "type": "PERSONS",
    "properties": [
        {"name": "user_id", "data_type_name": "STRING", "is_unique": True},
        {"name": "ssn", "data_type_name": "SSN"},
        {"name": "notes", "data_type_name": "LONG_TEXT", "is_nullable": True},
    ],
})
assert _SPEC is not None
USERS: CollectionSpec = _SPEC
SECRET_SSN = "123-12-1234"
MAX_RESPONSE = 1024 * 1024  # the default cap
NO_RETRIES = ("grpc.service_config", json.dumps({"methodConfig": []}))


@dataclass
class Rig:
    proxy: FaultProxy
    client: VaultClient
    direct: VaultClient  # the same vault without the proxy
    token_ids: tuple[str, ...]
    api_key: str

    def query(
        self, *token_ids: str, props: tuple[str, ...] = ("user_id", "ssn.mask", "notes")
    ) -> DetokenizeQuery:
        return DetokenizeQuery(
            collection="users", token_ids=token_ids or self.token_ids,
            props=props, reason="AppFunctionality",
            adhoc_reason=None, api_key=self.api_key,
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running_local_vault(VaultConfig(collections=(USERS,))) as vault, \
            aiohttp.ClientSession(headers=vault.admin_headers) as admin, \
            running_fault_proxy(vault.base_url) as proxy:
        # Long enough that the answer spans several TCP segments when split.
        records = [{"user_id": f"u-{i}", "ssn": SECRET_SSN, "notes": "x" * 3000}
                   for i in range(3)]
        async with admin.post(
            f"{vault.api_url}/data/collections/users/tokens",
            params={"reason": "AppFunctionality"},
            data=json.dumps([{"type": "pci", "object": {"fields": r}} for r in records]),
        ) as answer:
            assert answer.status == 200, await answer.text()
            token_ids = tuple(t["token_id"] for t in await answer.json())
        rig = Rig(proxy, VaultClient(proxy.url, MAX_RESPONSE),
                  VaultClient(vault.base_url, MAX_RESPONSE), token_ids, vault.admin_key)
        yield rig
        await rig.client.aclose()
        await rig.direct.aclose()


async def detokenize(rig: Rig, timeout_s: float = 2.0) -> object:
    """The call's answer, or the error it ended with (bounded whatever the client does)."""
    try:
        return await asyncio.wait_for(rig.client.detokenize(rig.query(), timeout_s), 10)
    except GatewayError as exc:
        failure = exc
    assert SECRET_SSN not in repr(failure)
    assert "x" * 20 not in repr(failure)
    return failure


def _kind(outcome: object) -> str:
    """What an outcome was, without its values (assertion messages stay readable)."""
    return repr(outcome) if isinstance(outcome, GatewayError) else type(outcome).__name__


async def test_an_untouched_answer_passes(rig: Rig) -> None:
    expected = await rig.direct.detokenize(rig.query(), 2)
    assert set(expected) == set(rig.token_ids)
    outcome = await detokenize(rig)
    assert outcome == expected, _kind(outcome)


@pytest.mark.parametrize(
    "fault",
    [Fault.split(2, 0.0), Fault.split(2, 0.05), Fault.split(7, 0.02),
     Fault.trickle(500, 0.005), Fault.late(0.2)],
    ids=["two-reads", "two-reads-delayed", "seven-pieces", "trickle", "late"],
)
async def test_a_valid_answer_arrives_whole_however_it_is_cut(rig: Rig, fault: Fault) -> None:
    expected = await rig.direct.detokenize(rig.query(), 2)
    rig.proxy.fault = fault
    outcome = await detokenize(rig)
    assert outcome == expected, _kind(outcome)


async def test_a_byte_at_a_time_answer_within_the_budget_succeeds(rig: Rig) -> None:
    query = rig.query(rig.token_ids[0], props=("user_id", "ssn.mask"))  # ~100 bytes
    expected = await rig.direct.detokenize(query, 2)
    rig.proxy.fault = Fault.trickle(1, 0.002)
    found = await asyncio.wait_for(rig.client.detokenize(query, 8), 10)
    assert found == expected, "the answer differs"


@pytest.mark.parametrize(
    ("fault", "expected", "detail"),
    [
        (Fault.reset_mid_body(), VaultResponseInvalid, "response ended early"),
        (Fault.truncated(10), VaultResponseInvalid, "response ended early"),
        (Fault.truncated(1), VaultResponseInvalid, "response ended early"),
        (Fault.replace_body(b"\x00\xff<html>bad gateway</html>"), VaultResponseInvalid,
         "not JSON"),
        # ~400 KB, under the 1 MiB cap: refused by its depth, not its size.
        (Fault.replace_body(b"[" * 400_000), VaultResponseInvalid, "nesting too deep"),
        (Fault.replace_body(b"[" * 1_000 + b"]" * 1_000), VaultResponseInvalid,
         "nesting too deep"),
        (Fault.replace_body(b"[" * (MAX_RESPONSE + 1)), VaultResponseInvalid,
         "response too large"),
        (Fault.duplicates(conflicting=True), VaultResponseInvalid,
         "conflicting duplicate token"),
        (Fault.garbage(), VaultUnavailable, None),  # not HTTP at all: nobody usable answered
    ],
    ids=["reset", "truncated-10", "truncated-1", "garbage-body", "nested-400k",
         "nested-1000", "over-cap", "conflicting-duplicates", "not-http"],
)
async def test_a_broken_answer_is_one_typed_error(
    rig: Rig, fault: Fault, expected: type[GatewayError], detail: str | None
) -> None:
    rig.proxy.fault = fault
    outcome = await detokenize(rig)
    assert type(outcome) is expected, _kind(outcome)
    assert outcome.metadata.get("detail") == detail


async def test_identical_duplicates_are_one_answer(rig: Rig) -> None:
    expected = await rig.direct.detokenize(rig.query(), 2)
    rig.proxy.fault = Fault.duplicates(conflicting=False)
    outcome = await detokenize(rig)
    assert outcome == expected, _kind(outcome)


@pytest.mark.parametrize(
    "fault", [Fault.hang(), Fault.stall_mid_body(), Fault.late(5), Fault.trickle(1, 0.05)],
    ids=["hang", "stall-mid-body", "late", "trickle"],
)
async def test_a_stalled_answer_ends_at_the_calls_budget(rig: Rig, fault: Fault) -> None:
    rig.proxy.fault = fault
    started = time.monotonic()
    outcome = await detokenize(rig, timeout_s=0.3)
    assert type(outcome) is VaultTimeout, _kind(outcome)
    assert time.monotonic() - started < 3  # the budget ended it, not the 10 s guard


async def test_error_bodies_are_read_strictly_too(rig: Rig) -> None:
    """A 404 whose body is hostile nesting is still the 404's typed error, not a crash."""
    rig.proxy.fault = Fault.replace_body(b"[" * 50_000)
    query = DetokenizeQuery("no-such-collection", rig.token_ids, ("ssn",), "AppFunctionality",
                            None, rig.api_key)
    with pytest.raises(GatewayError) as caught:
        await asyncio.wait_for(rig.client.detokenize(query, 2), 10)
    assert caught.value.reason == "VAULT_MISCONFIGURED"
    assert caught.value.metadata == {"vault_status": "404"}


async def test_the_proxy_stops_with_connections_still_hanging() -> None:
    async with running_fault_proxy("http://127.0.0.1:9") as proxy:
        proxy.fault = Fault.hang()
        reader, writer = await asyncio.open_connection("127.0.0.1", int(proxy.url.rsplit(":")[-1]))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy's exit
    assert time.monotonic() - started < 5
    writer.close()


# --- through the whole gateway ------------------------------------------------------------
async def test_gateway_a_split_answer_succeeds_end_to_end() -> None:
    async with running_fault_proxy() as proxy, running_stack(vault_url=proxy.url) as stack:
        proxy.upstream = stack.vault.base_url
        proxy.fault = Fault.split(4, 0.02)
        support = await stack.caller("support-tool")
        result = await support.detokenize(stack.user_token("alice"), timeout_s=10)
        assert result["ssn"].value == "***-**-1234"
        assert proxy.connections >= 1


async def test_gateway_a_hostile_nested_answer_is_one_audited_vault_error() -> None:
    async with running_fault_proxy() as proxy, running_stack(vault_url=proxy.url) as stack:
        proxy.upstream = stack.vault.base_url
        proxy.fault = Fault.replace_body(b"[" * 400_000)
        token = await stack.caller_token("support-tool")
        before = len(stack.audit_events())
        # One attempt: the client's own retry of UNAVAILABLE would make three calls.
        async with AsyncDetokenizationClient(
            stack.target, lambda: token, timeout_s=10, options=[NO_RETRIES]
        ) as support:
            with pytest.raises(PiigateError) as caught:
                await support.detokenize(stack.user_token("alice"))
        assert caught.value.reason == "VAULT_RESPONSE_INVALID"
        events = stack.audit_events()[before:]
        assert [e["error_reason"] for e in events] == ["VAULT_RESPONSE_INVALID"]
        assert proxy.connections == 1
        assert "[[[" not in stack.audit_text()
