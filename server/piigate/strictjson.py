"""JSON as RFC 8259 has it, for input an attacker may shape (tokens, key sets, request
bodies, vault answers): duplicate member names and the `NaN`/`Infinity` extensions are
refused, since parsers that disagree on them disagree on what a document says (RFC 8725
§3.x, RFC 7515 §5.2 "duplicate Header Parameter names MUST be rejected").

Nesting is limited (RFC 8259 §9 lets a parser "set limits on the maximum depth of
nesting"): a document nested deeper than `MAX_DEPTH` arrays and objects is refused with
`NestingTooDeep` before it is parsed, whatever the caller's stack depth. Python's parser
recurses once per level; should it still run out of stack (a caller already deep in its
own), that too is `NestingTooDeep`, never a `RecursionError` escaping into the caller.

Every refusal is a `ValueError` (`UnicodeDecodeError` for bytes that are not UTF-8 is one
too), so one `except ValueError` covers them all.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

MAX_DEPTH = 128  # arrays and objects inside each other; real documents use a handful


class DuplicateMember(ValueError):
    """An object names the same member twice."""


class NestingTooDeep(ValueError):
    """Arrays and objects nested deeper than the limit."""


# Every byte but brackets and quotes; and each byte's step in nesting depth.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_PEEL_ROUNDS, _PEEL_MAX_BYTES = 4, 4096
_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, refusing duplicate names, non-standard constants and nesting deeper
    than `max_depth` with a ValueError."""
    _check_depth(text, max_depth)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as exc:
        raise NestingTooDeep("nesting too deep") from exc


def _check_depth(text: str | bytes, max_depth: int) -> None:
    """Refuse nesting deeper than `max_depth`, at C speed: the scan is a handful of
    whole-buffer operations and one early-exit pass over the brackets alone."""
    # A document with no more opening brackets than the limit (every single-record
    # answer, every token) cannot nest deeper than it.
    if isinstance(text, str):
        if text.count("[") + text.count("{") <= max_depth:
            return
        raw = text.encode("utf-8", "surrogatepass")
    elif text.count(b"[") + text.count(b"{") <= max_depth:
        return
    else:
        raw = text
    # Escapes first, left to right as a parser reads them: `\\\\` pairs, then the `\\"`
    # that remain are quotes inside strings. The `"` left delimit strings, whose brackets
    # do not nest. Dropping two adjacent quotes keeps the parity of the quotes before
    # every other byte, so it drops strings without brackets and changes nothing else;
    # of the rest, the even-numbered parts between quotes lie outside strings.
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    # A short, shallow structure (a batch answer) vanishes after a few rounds of peeling
    # empty pairs, each removing at most two levels: cheaper than the pass below.
    if len(structure) <= _PEEL_MAX_BYTES:
        peeled = structure
        for _ in range(min(_PEEL_ROUNDS, max_depth // 2)):
            peeled = peeled.replace(b"[]", b"").replace(b"{}", b"")
            if not peeled:
                return
    # Otherwise one pass over the running depth, stopping at the first level too deep.
    depths = accumulate(map(_STEP.__getitem__, structure))
    if next(filter(max_depth.__lt__, depths), None) is not None:
        raise NestingTooDeep("nesting too deep")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)  # at C speed; a repeated name leaves fewer members than pairs
    if len(result) != len(pairs):
        raise DuplicateMember("duplicate member name")
    return result


def _no_constant(_: str) -> Any:
    raise ValueError("non-standard JSON constant")
