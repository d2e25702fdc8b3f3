"""Data endpoints: objects (add, get) and tokens (tokenize, detokenize, rotate, delete).

Every call takes the same first steps (`DataCall.begin`): authenticate the key, parse
the reason, find the collection the key may see, and check the operation is allowed
at all. Property-level permission is checked once the call knows which properties it
touches; a refusal is audited, then answered 403. Each success writes one audit line.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from piigate.vault.piiano import API_BASE
from piigate_dev.localvault.audit import AuditEvent
from piigate_dev.localvault.boundary import answer, read_json, vault_and_caller
from piigate_dev.localvault.errors import (
    NotPermitted,
    ObjectNotFound,
    RequestInvalid,
    TokenNotDetokenizable,
)
from piigate_dev.localvault.params import (
    PropRef,
    Purpose,
    Query,
    list_param,
    parse_expiration,
    parse_options,
    parse_props,
    parse_purpose,
)
from piigate_dev.localvault.policy import ApiKey
from piigate_dev.localvault.schema import CollectionSpec, check_values
from piigate_dev.localvault.shaping import check_refs, shape
from piigate_dev.localvault.tokens import (
    Token,
    TokenSelector,
    build_token,
    parse_tokenize_body,
    resources_of,
    token_metadata,
)
from piigate_dev.localvault.vault import Vault

BASE = API_BASE + "/data/collections/{collection}"
_OBJECT_OPTIONS = frozenset({"unsafe", "include_metadata"})
_DETOKENIZE_OPTIONS = frozenset({"include_metadata"})


@dataclass(frozen=True, slots=True)
class DataCall:
    """One authenticated data call on one collection, for one purpose."""

    vault: Vault
    key: ApiKey
    purpose: Purpose
    collection: CollectionSpec
    query: Query
    operation: str  # the policy operation: tokenize, detokenize, read, write
    action: str  # what the audit line calls it

    @classmethod
    def begin(cls, request: web.Request, operation: str, action: str = "") -> DataCall:
        """Authenticate, parse the reason, resolve the collection, check the operation."""
        vault, key = vault_and_caller(request)
        query = list(request.query.items())
        purpose = parse_purpose(query)
        collection = vault.collection(key, request.match_info["collection"])
        call = cls(vault, key, purpose, collection, query, operation, action or operation)
        call.require(())
        return call

    def require(self, resources: Sequence[str]) -> None:
        """Allow the operation on `resources` (property names, `ssn.mask`) or refuse."""
        denial = self.key.denial(
            self.operation, self.collection.name, resources, self.purpose.reason
        )
        if denial is not None:
            self.audit(outcome="denied", props=resources)
            raise NotPermitted(**denial)

    def audit(
        self,
        *,
        outcome: str = "ok",
        token_ids: Sequence[str] = (),
        object_ids: Sequence[str] = (),
        props: Sequence[str] = (),
    ) -> None:
        """One audit line for this call: names and ids, never values."""
        self.vault.record(
            AuditEvent(
                self.action, self.key.name, self.collection.name, self.purpose, outcome,
                token_ids, object_ids, props,
            )
        )  # fmt: skip

    def selector(self) -> TokenSelector:
        """token_ids / object_ids / tags (intersected); at least one is required."""
        selector = TokenSelector(
            list_param(self.query, "token_ids"),
            list_param(self.query, "object_ids"),
            list_param(self.query, "tags"),
        )
        if not selector:
            raise RequestInvalid(
                parameter="token_ids", problem="give token_ids, object_ids or tags"
            )
        return selector


async def add_object(request: web.Request) -> web.Response:
    """Store a flat `{property: value}` map; answer `{"id": uuid}`."""
    call = DataCall.begin(request, "write", "add_object")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestInvalid(field="<body>", problem="must be an object of properties")
    check_values(call.collection, body, complete=True)
    call.require(sorted(body))
    object_id = call.vault.store.add_object(call.collection, body, call.vault.clock())
    call.audit(object_ids=(object_id,), props=sorted(body))
    return answer({"id": object_id})


async def get_object(request: web.Request) -> web.Response:
    """One object's properties, narrowed and transformed by `props`."""
    call = DataCall.begin(request, "read", "get_object")
    refs = parse_props(list_param(call.query, "props"))
    check_refs(call.collection, refs)
    parse_options(call.query, _OBJECT_OPTIONS)
    resources = [ref.key for ref in refs] or [prop.name for prop in call.collection.properties]
    call.require(resources)
    object_id = request.match_info["object_id"]
    found = call.vault.store.objects(call.collection, (object_id,))
    if object_id not in found:
        raise ObjectNotFound(object_id=object_id)
    call.audit(object_ids=(object_id,), props=resources)
    return answer(shape(call.collection, found[object_id], refs))


async def tokenize(request: web.Request) -> web.Response:
    """Create tokens, all or nothing; answer `[{"token_id": ...}]` in request order."""
    call = DataCall.begin(request, "tokenize")
    expiration = parse_expiration(call.query)
    items = parse_tokenize_body(await read_json(request), call.collection)
    call.require(sorted({name for item in items for name in item.resources(call.collection)}))
    store, now = call.vault.store, call.vault.clock()
    wanted = sorted({item.object_id for item in items if item.object_id is not None})
    objects = store.objects(call.collection, wanted) if wanted else {}
    missing = [object_id for object_id in wanted if object_id not in objects]
    if missing:
        raise ObjectNotFound(object_id=missing[0])
    name = call.collection.name
    tokens = [
        build_token(
            item,
            objects[item.object_id] if item.object_id is not None else dict(item.fields or {}),
            now=now,
            expires_at=None if expiration is None else now + expiration,
            new_id=lambda: str(uuid.uuid4()),
            deterministic_id=lambda fields: call.vault.sealer.deterministic_token_id(name, fields),
        )
        for item in items
    ]
    store.add_tokens(name, tokens, now)
    call.audit(
        token_ids=[t.token_id for t in tokens], object_ids=wanted, props=resources_of(tokens)
    )
    return answer([{"token_id": token.token_id} for token in tokens])


async def detokenize(request: web.Request) -> web.Response:
    """The fields behind the selected live tokens; unknown or expired ones left out."""
    call = DataCall.begin(request, "detokenize")
    selector = call.selector()
    refs = parse_props(list_param(call.query, "props"))
    check_refs(call.collection, refs)
    with_metadata = "include_metadata" in parse_options(call.query, _DETOKENIZE_OPTIONS)
    store = call.vault.store
    tokens = store.find_tokens(call.collection.name, selector, call.vault.clock())
    resources = [ref.key for ref in refs] if refs else resources_of(tokens)
    call.require(resources)
    if any(token.type == "pci_oneway" for token in tokens):
        raise TokenNotDetokenizable()
    fields = store.token_fields(call.collection.name, tokens)
    answered = [token for token in tokens if token.token_id in fields]
    call.audit(token_ids=[t.token_id for t in answered], props=resources)
    return answer(
        [_detokenized(call, t, fields[t.token_id], refs, with_metadata) for t in answered]
    )


def _detokenized(
    call: DataCall, token: Token, values: dict[str, object], refs: Sequence[PropRef], meta: bool
) -> dict[str, object]:
    item: dict[str, object] = {
        "token_id": token.token_id,
        "fields": shape(call.collection, values, refs),
    }
    if meta:
        item["metadata"] = token_metadata(token, call.collection.name)
    return item


async def rotate(request: web.Request) -> web.Response:
    """New ids for the selected tokens; answer `{old_id: new_id}` (the old ids die)."""
    call = DataCall.begin(request, "tokenize", "rotate_tokens")
    store = call.vault.store
    tokens = store.find_tokens(call.collection.name, call.selector(), call.vault.clock())
    renamed = store.rotate_tokens(call.collection.name, tokens)
    call.audit(token_ids=[*renamed, *renamed.values()])
    return answer(renamed)


async def delete_tokens(request: web.Request) -> web.Response:
    """Delete the selected tokens; an empty 200 like Piiano's."""
    call = DataCall.begin(request, "tokenize", "delete_tokens")
    store = call.vault.store
    tokens = store.find_tokens(call.collection.name, call.selector(), call.vault.clock())
    store.delete_tokens(call.collection.name, tokens)
    call.audit(token_ids=[token.token_id for token in tokens])
    return web.Response(status=200)


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the data endpoints."""
    router.add_post(f"{BASE}/objects", add_object)
    router.add_get(f"{BASE}/objects/{{object_id}}", get_object)
    router.add_post(f"{BASE}/tokens", tokenize)
    router.add_get(f"{BASE}/tokens", detokenize)
    router.add_delete(f"{BASE}/tokens", delete_tokens)
    router.add_post(f"{BASE}/rotate/tokens", rotate)
