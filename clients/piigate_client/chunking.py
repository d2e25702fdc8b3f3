"""Cutting a long list (subject tokens, subjects) into calls a gateway accepts.

One `BatchDetokenize` call takes at most the gateway's `server.max_batch_size` tokens
(more is refused with `BATCH_TOO_LARGE`) in one gRPC message of at most
`server.max_request_bytes` (a larger one gRPC refuses before piigate sees it, with
RESOURCE_EXHAUSTED and no piigate error details). `chunks` cuts by both at once:

    from piigate_client.chunking import chunks

    for chunk in chunks(subject_tokens, max_items=100, max_bytes=1024 * 1024 - 16 * 1024):
        results += client.detokenize_many(chunk, fields=["email"])

`subject_token_chunks` does the same with the gateway's defaults and room for the rest of
the request (fields, reason, adhoc_reason). Sizes are protobuf wire bytes: an entry of a
`repeated string` field costs a tag byte, its length as a varint and its UTF-8 bytes
(protobuf.dev, "Encoding"). The gateway's own check of its two limits
(`piigate.config.message_size`) uses the same arithmetic; it is written out here again
because this package is installed without the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

T = TypeVar("T")

# The gateway's defaults (README, "Configuration"): a full default batch of the largest
# subject tokens it accepts (8 KiB) fits its default message limit.
DEFAULT_MAX_BATCH_SIZE = 100
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# What the gateway allows for a request besides its tokens: about 240 field names, the
# reason and the longest adhoc_reason (256 characters).
REQUEST_ALLOWANCE_BYTES = 16 * 1024


def wire_size(text: str) -> int:
    """Bytes `text` takes as one entry of a protobuf `repeated string` field."""
    length = len(text.encode("utf-8"))
    return 1 + max(1, (length.bit_length() + 6) // 7) + length


@overload
def chunks(items: Iterable[str], max_items: int, max_bytes: int) -> list[list[str]]: ...


@overload
def chunks(
    items: Iterable[T], max_items: int, max_bytes: int, size: Callable[[T], int]
) -> list[list[T]]: ...


def chunks(
    items: Iterable[Any],
    max_items: int,
    max_bytes: int,
    size: Callable[[Any], int] | None = None,
) -> list[list[Any]]:
    """`items` cut into consecutive chunks, in order, each of at most `max_items` items
    whose sizes add up to at most `max_bytes`; every item is in exactly one chunk, and
    a chunk is cut only when the next item would not fit.

    `size` gives an item's bytes; by default an item is a string measured by `wire_size`,
    so `max_bytes` is the message budget for the tokens. An item too large for any chunk
    raises ValueError naming its position (never its content: it may be a token) before
    anything is returned, so no call is made for a list that cannot all be sent.
    """
    if max_items < 1 or max_bytes < 1:
        raise ValueError("max_items and max_bytes must be at least 1")
    measure: Callable[[Any], int] = size or _string_size
    cut: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for position, item in enumerate(items):
        cost = measure(item)
        if cost > max_bytes:
            raise ValueError(f"item {position} takes {cost} bytes, more than max_bytes "
                             f"({max_bytes}) on its own")
        if current and (len(current) == max_items or used + cost > max_bytes):
            cut.append(current)
            current, used = [], 0
        current.append(item)
        used += cost
    if current:
        cut.append(current)
    return cut


def subject_token_chunks(
    subject_tokens: Iterable[str],
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    reserve_bytes: int = REQUEST_ALLOWANCE_BYTES,
) -> list[list[str]]:
    """`subject_tokens` in chunks one `BatchDetokenize` each, for a gateway with these
    `server.max_batch_size` and `server.max_request_bytes` (pass its values when they
    are not the defaults); `reserve_bytes` is kept for the request's other fields."""
    return chunks(subject_tokens, max_batch_size, max_request_bytes - reserve_bytes)


def _string_size(item: object) -> int:
    if not isinstance(item, str):
        raise TypeError("without `size`, chunks measures strings only; pass size=")
    return wire_size(item)
