"""JSON as RFC 8259 has it, for input an attacker may shape (tokens, key sets, request
bodies): duplicate member names and the `NaN`/`Infinity` extensions are refused, since
parsers that disagree on them disagree on what a document says (RFC 8725 §3.x, RFC 7515
§5.2 "duplicate Header Parameter names MUST be rejected")."""

from __future__ import annotations

import json
from typing import Any


class DuplicateMember(ValueError):
    """An object names the same member twice."""


def loads(text: str | bytes) -> Any:
    """`json.loads`, refusing duplicate names and non-standard constants with ValueError
    (RecursionError too for absurd nesting; UnicodeDecodeError for bytes not UTF-8)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise DuplicateMember("duplicate member name")
        result[name] = value
    return result


def _no_constant(_: str) -> Any:
    raise ValueError("non-standard JSON constant")
