"""Tokens: records, the tokenize request body, selection and metadata (pure).

Token types (Piiano's): `pointer` answers the object's current values; `randomized`,
`deterministic` and `pci` keep a sealed snapshot of the values at tokenization;
`deterministic` ids are derived from the collection and the values, so the same fields
give the same id; `pci_oneway` keeps its snapshot but is refused on detokenize.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from piigate_dev.localvault.errors import PropertyUnknown, RequestInvalid, TokenIdTaken
from piigate_dev.localvault.schema import CollectionSpec, check_values

TOKEN_TYPES = frozenset({"pointer", "randomized", "deterministic", "pci", "pci_oneway"})
TOKEN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
TAGS_MAX = 10
TAG_MAX_CHARS = 256
BATCH_MAX = 1000
_ITEM_KEYS = frozenset({"type", "object", "props", "tags", "token_id"})


@dataclass(frozen=True, slots=True)
class Token:
    """A token's record. `fields` is the snapshot to store (None for pointer tokens)."""

    token_id: str
    type: str
    object_id: str | None
    props: tuple[str, ...]
    tags: tuple[str, ...]
    created_at: float
    expires_at: float | None
    fields: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class TokenSelector:
    """Which tokens a call addresses; the non-empty criteria are intersected."""

    token_ids: tuple[str, ...] = ()
    object_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.token_ids or self.object_ids or self.tags)


@dataclass(frozen=True, slots=True)
class TokenizeItem:
    """One entry of a tokenize request: exactly one of `object_id` and `fields`."""

    type: str
    object_id: str | None
    fields: Mapping[str, object] | None
    props: tuple[str, ...]
    tags: tuple[str, ...]
    token_id: str | None

    def resources(self, collection: CollectionSpec) -> tuple[str, ...]:
        """The properties this item tokenizes (for the permission check)."""
        if self.props:
            return self.props
        if self.fields is not None:
            return tuple(self.fields)
        return tuple(prop.name for prop in collection.properties)


def _string_list(raw: object, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise RequestInvalid(field=where, problem="must be a list of strings")
    return tuple(dict.fromkeys(raw))


def _parse_item(raw: object, index: int, collection: CollectionSpec) -> TokenizeItem:
    where = f"[{index}]"
    if not isinstance(raw, dict):
        raise RequestInvalid(field=where, problem="must be an object")
    unknown = sorted(raw.keys() - _ITEM_KEYS)
    if unknown:
        raise RequestInvalid(field=f"{where}.{unknown[0]}", problem="unknown key")
    kind = raw.get("type")
    if kind not in TOKEN_TYPES:
        raise RequestInvalid(field=f"{where}.type", problem="unknown token type")
    target = raw.get("object")
    if not isinstance(target, dict) or len(target.keys() & {"id", "fields"}) != 1:
        raise RequestInvalid(field=f"{where}.object", problem="needs exactly one of id, fields")
    object_id, fields = target.get("id"), target.get("fields")
    if object_id is not None and not isinstance(object_id, str):
        raise RequestInvalid(field=f"{where}.object.id", problem="must be a string")
    if fields is not None:
        if kind == "pointer":
            raise RequestInvalid(field=f"{where}.object", problem="pointer tokens need an id")
        if not isinstance(fields, dict) or not fields:
            raise RequestInvalid(
                field=f"{where}.object.fields", problem="must be a non-empty object"
            )
        check_values(collection, fields, complete=False)
    props = _string_list(raw.get("props"), f"{where}.props")
    for name in props:
        if collection.property(name) is None:
            raise PropertyUnknown(property=name)
    tags = _string_list(raw.get("tags"), f"{where}.tags")
    if len(tags) > TAGS_MAX or any(not tag or len(tag) > TAG_MAX_CHARS for tag in tags):
        raise RequestInvalid(field=f"{where}.tags", problem=f"at most {TAGS_MAX} non-empty tags")
    token_id = raw.get("token_id")
    if token_id is not None and not (
        isinstance(token_id, str) and TOKEN_ID_PATTERN.fullmatch(token_id)
    ):
        raise RequestInvalid(field=f"{where}.token_id", problem="letters, digits, - and _ (<=128)")
    return TokenizeItem(str(kind), object_id, fields, props, tags, token_id)


def parse_tokenize_body(raw: object, collection: CollectionSpec) -> list[TokenizeItem]:
    """Validate a tokenize body (a JSON array of requests) against `collection`."""
    if not isinstance(raw, list) or not raw:
        raise RequestInvalid(field="<body>", problem="must be a non-empty array")
    if len(raw) > BATCH_MAX:
        raise RequestInvalid(field="<body>", problem=f"at most {BATCH_MAX} requests")
    items = [_parse_item(entry, index, collection) for index, entry in enumerate(raw)]
    chosen = [item.token_id for item in items if item.token_id is not None]
    if len(chosen) != len(set(chosen)):
        raise TokenIdTaken(problem="the same token_id is asked for twice")
    return items


def build_token(
    item: TokenizeItem,
    values: Mapping[str, object],
    *,
    now: float,
    expires_at: float | None,
    new_id: Callable[[], str],
    deterministic_id: Callable[[Mapping[str, object]], str],
) -> Token:
    """The record for `item`, given the values it covers (the object's or its fields)."""
    props = item.props or tuple(values)
    snapshot = {name: values[name] for name in props if name in values}
    if item.token_id is not None:
        token_id = item.token_id
    elif item.type == "deterministic":
        token_id = deterministic_id(snapshot)
    else:
        token_id = new_id()
    return Token(
        token_id=token_id,
        type=item.type,
        object_id=item.object_id,
        props=props,
        tags=item.tags,
        created_at=now,
        expires_at=expires_at,
        fields=None if item.type == "pointer" else snapshot,
    )


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


def token_metadata(token: Token, collection: str) -> dict[str, Any]:
    """What `options=include_metadata` adds to a detokenized token."""
    metadata: dict[str, Any] = {
        "type": token.type,
        "collection": collection,
        "tags": list(token.tags),
        "creation_time": _iso(token.created_at),
    }
    if token.object_id is not None:
        metadata["object_id"] = token.object_id
    if token.expires_at is not None:
        metadata["expiration_time"] = _iso(token.expires_at)
    return metadata


def resources_of(tokens: Sequence[Token]) -> list[str]:
    """Every property behind `tokens`, for the permission check."""
    return sorted({prop for token in tokens for prop in token.props})
