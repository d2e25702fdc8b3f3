"""Stage 7 for one call: its items' vault reads, sent together.

Every item of a call (one for Detokenize, up to `max_batch_size` for BatchDetokenize)
runs the path on its own, inside its own audit envelope; at the vault stage it hands its
read here. Once every item has either read or dropped out (refused earlier), the reads
go to the vault as one detokenize per group of items that can share it: same
properties, reason and free-text purpose, and no binding tag (tags are intersected by
the vault, so each bound item asks alone). A group's failure is each of its items'
failure. A lone item asks at once, with nothing to wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from piigate.errors import TokenBindingMismatch, VaultTokenNotFound
from piigate.policy.decision import Plan
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import Vault

Fields = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Read:
    """One item's read: its plan, its vault token, its binding tag if bound."""

    plan: Plan
    token_id: str
    binding: str | None
    request_ref: str  # joins the vault's audit log with piigate's (batch or request id)


class CallReads:
    """The vault reads of one call with `items` items; each item calls `read` or `drop`
    exactly once. Every read ends by `deadline`, whenever it starts."""

    __slots__ = ("_deadline", "_pending", "_reads", "_task", "_vault")

    def __init__(self, vault: Vault, items: int, deadline: float) -> None:
        self._vault = vault
        self._pending = items
        self._deadline = deadline  # on the event loop's clock (`loop.time()`)
        self._reads: list[tuple[Read, asyncio.Future[Fields]]] = []
        self._task: asyncio.Task[None] | None = None

    async def read(self, read: Read) -> Fields:
        """The item's fields as the vault returned them; raises the vault's error,
        VaultTokenNotFound, or (bound) TokenBindingMismatch."""
        self._pending -= 1
        if not read.plan.vault_props:
            # Everything is redacted: nothing is read, so nothing is asked of the vault
            # (an empty `props` would make the vault return every property).
            self._send_if_complete()
            return {}
        if self._pending == 0 and not self._reads:  # alone: ask now
            return _fields_of(read, await self._ask((read,)))
        future: asyncio.Future[Fields] = asyncio.get_running_loop().create_future()
        self._reads.append((read, future))
        self._send_if_complete()
        return await future

    def time_left(self) -> float:
        """What remains of the call's budget (for the other I/O before the vault)."""
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def drop(self) -> None:
        """The item was refused before the vault stage: nothing to read."""
        self._pending -= 1
        self._send_if_complete()

    def _send_if_complete(self) -> None:
        if self._pending == 0 and self._reads and self._task is None:
            # A task of its own: items that are cancelled must not strand the others.
            self._task = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        groups: dict[tuple[object, ...], list[tuple[Read, asyncio.Future[Fields]]]] = {}
        for read, future in self._reads:
            plan = read.plan
            alone = id(read) if read.binding else None
            key = (plan.vault_props, plan.reason, plan.adhoc_reason, alone)
            groups.setdefault(key, []).append((read, future))
        await asyncio.gather(*(self._send_group(g) for g in groups.values()))

    async def _send_group(self, group: list[tuple[Read, asyncio.Future[Fields]]]) -> None:
        try:
            found = await self._ask(tuple(read for read, _ in group))
        except BaseException as exc:  # the items' envelopes record it, whatever it is
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for read, future in group:
            if future.done():  # the item was cancelled
                continue
            try:
                future.set_result(_fields_of(read, found))
            except (VaultTokenNotFound, TokenBindingMismatch) as exc:
                future.set_exception(exc)

    async def _ask(self, reads: tuple[Read, ...]) -> Mapping[str, Fields]:
        first = reads[0]
        plan = first.plan
        query = DetokenizeQuery(
            collection=plan.profile.collection,
            token_ids=tuple(dict.fromkeys(r.token_id for r in reads)),
            props=plan.vault_props,
            reason=plan.reason,
            adhoc_reason=plan.adhoc_reason,
            api_key=plan.profile.vault_api_key,
            tags=(first.binding,) if first.binding else (),
            custom_audit=f"piigate request {first.request_ref}",
        )
        timeout_s = max(0.0, self._deadline - asyncio.get_running_loop().time())
        return await self._vault.detokenize(query, timeout_s)


def _fields_of(read: Read, found: Mapping[str, Fields]) -> Fields:
    fields = found.get(read.token_id)
    if fields is None:
        # With a binding tag, "no such token" and "another user's token" look the same on
        # purpose: the vault does not reveal which.
        raise TokenBindingMismatch() if read.binding else VaultTokenNotFound()
    return fields
