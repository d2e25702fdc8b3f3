"""Stage 7 for one call: its items' vault reads, sent together.

Every item of a call (one for Detokenize, up to `max_batch_size` for BatchDetokenize)
runs the path on its own, inside its own audit envelope; at the vault stage it hands its
read here. Once every item has either read or dropped out (refused earlier), the reads
go to the vault as one detokenize per group of items that can share it: same
properties, reason, free-text reason and purpose, and no tag (tags are intersected by
the vault, so each tagged item asks alone). A group's failure is each of its items'
failure. A lone item asks at once, with nothing to wait for.

An item reads by one of two selectors:

- a token id (the subject token's claim), and for a bound profile only if the token
  carries the tag too: a missing token is VAULT_TOKEN_NOT_FOUND, or TOKEN_BINDING_MISMATCH
  when bound (the two are deliberately alike);
- a tag alone (a subject named by the caller, or a SMART launch patient): the one token
  that carries it. None is SUBJECT_NOT_FOUND; more than one is SUBJECT_AMBIGUOUS, since a
  tag is written once per person and collection, and picking one could disclose another
  person's record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from piigate.errors import (
    SubjectAmbiguous,
    SubjectNotFound,
    TokenBindingMismatch,
    VaultTokenNotFound,
)
from piigate.policy.decision import Plan
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import Vault

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

Fields = Mapping[str, Any]


class Found(NamedTuple):
    """What an item's read found: the vault token ("" when nothing was read) and its
    fields."""

    token_id: str
    fields: Fields


@dataclass(frozen=True, slots=True)
class Read:
    """One item's read: its plan, and its selector: a vault token id (with the binding tag
    if bound), or no token id and the tag that names the person."""

    plan: Plan
    token_id: str | None  # None: the token that carries `binding`
    binding: str | None  # the tag: a check beside a token id, the selector without one
    request_ref: str  # joins the vault's audit log with piigate's (batch or request id)
    trace: SpanContext | None = None  # the item's vault span, when tracing is on


class CallReads:
    """The vault reads of one call with `items` items; each item calls `read` or `drop`
    exactly once. Every read ends by `deadline`, whenever it starts."""

    __slots__ = ("_deadline", "_pending", "_reads", "_task", "_vault")

    def __init__(self, vault: Vault, items: int, deadline: float) -> None:
        self._vault = vault
        self._pending = items
        self._deadline = deadline  # on the event loop's clock (`loop.time()`)
        self._reads: list[tuple[Read, asyncio.Future[Found]]] = []
        self._task: asyncio.Task[None] | None = None

    async def read(self, read: Read) -> Found:
        """The item's token and fields as the vault returned them; raises the vault's
        error, or the selector's not-found (see the module's docstring)."""
        self._pending -= 1
        if not read.plan.vault_props:
            # Everything is redacted: nothing is read, so nothing is asked of the vault
            # (an empty `props` would make the vault return every property).
            self._send_if_complete()
            return Found(read.token_id or "", {})
        if self._pending == 0 and not self._reads:  # alone: ask now
            return _fields_of(read, await self._ask((read,)))
        future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
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
        groups: dict[tuple[object, ...], list[tuple[Read, asyncio.Future[Found]]]] = {}
        for read, future in self._reads:
            plan = read.plan
            alone = id(read) if read.binding else None
            key = (plan.vault_props, plan.reason, plan.adhoc_reason, plan.purpose, alone)
            groups.setdefault(key, []).append((read, future))
        await asyncio.gather(*(self._send_group(g) for g in groups.values()))

    async def _send_group(self, group: list[tuple[Read, asyncio.Future[Found]]]) -> None:
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
            except (VaultTokenNotFound, TokenBindingMismatch, SubjectNotFound,
                    SubjectAmbiguous) as exc:
                future.set_exception(exc)

    async def _ask(self, reads: tuple[Read, ...]) -> Mapping[str, Fields]:
        first = reads[0]
        plan = first.plan
        query = DetokenizeQuery(
            collection=plan.profile.collection,
            token_ids=tuple(dict.fromkeys(r.token_id for r in reads if r.token_id)),
            props=plan.vault_props,
            reason=plan.reason,
            adhoc_reason=plan.adhoc_reason,
            api_key=plan.profile.vault_api_key,
            tags=(first.binding,) if first.binding else (),
            custom_audit=f"piigate request {first.request_ref}",
            purpose=plan.purpose,
            trace=() if first.trace is None else tuple(
                r.trace for r in reads if r.trace is not None),
        )
        timeout_s = max(0.0, self._deadline - asyncio.get_running_loop().time())
        return await self._vault.detokenize(query, timeout_s)


def _fields_of(read: Read, found: Mapping[str, Fields]) -> Found:
    if read.token_id is None:  # by tag alone: the one token that carries it
        if not found:
            raise SubjectNotFound()
        if len(found) > 1:
            raise SubjectAmbiguous({"tokens": str(len(found))})
        ((token_id, only),) = found.items()
        return Found(token_id, only)
    fields = found.get(read.token_id)
    if fields is None:
        # With a binding tag, "no such token" and "another user's token" look the same on
        # purpose: the vault does not reveal which.
        raise TokenBindingMismatch() if read.binding else VaultTokenNotFound()
    return Found(read.token_id, fields)
