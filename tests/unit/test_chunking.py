"""piigate_client.chunking: lists cut by count and by wire bytes, as protobuf counts them."""

from __future__ import annotations

import pytest

from piigate.config.message_size import (
    DEFAULT_MAX_REQUEST_BYTES,
    REQUEST_ALLOWANCE_BYTES,
    batch_request_bytes,
    token_entry_bytes,
)
from piigate.tokens.jws import DEFAULT_MAX_TOKEN_BYTES
from piigate_client import chunking
from piigate_client.chunking import chunks, subject_token_chunks, wire_size
from piigate_client.v1 import detokenization_pb2 as pb


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16383, 16384, 8192, 70000])
def test_wire_size_is_what_protobuf_encodes(length: int) -> None:
    token = "a" * length
    assert wire_size(token) == pb.BatchDetokenizeRequest(subject_tokens=[token]).ByteSize()
    assert wire_size(token) == token_entry_bytes(length)  # the gateway counts the same way
    assert wire_size("é" * 10) == 1 + 1 + 20  # UTF-8 bytes, not characters


def test_a_request_of_many_entries_adds_up() -> None:
    tokens = [f"token-{i}" * (i + 1) for i in range(50)]
    request = pb.BatchDetokenizeRequest(subject_tokens=tokens)
    assert request.ByteSize() == sum(map(wire_size, tokens))


def test_cut_by_count_keeps_order_and_every_item_once() -> None:
    items = [str(i) for i in range(250)]
    cut = chunks(items, 100, 10**9)
    assert [len(c) for c in cut] == [100, 100, 50]
    assert [i for c in cut for i in c] == items


def test_cut_by_bytes_before_the_item_that_would_not_fit() -> None:
    items = ["x" * 97] * 10  # 100 wire bytes each
    assert [len(c) for c in chunks(items, 100, 350)] == [3, 3, 3, 1]
    assert [len(c) for c in chunks(items, 100, 300)] == [3, 3, 3, 1]
    assert [len(c) for c in chunks(items, 2, 350)] == [2, 2, 2, 2, 2]


def test_a_custom_size_for_other_items() -> None:
    assert chunks([5, 5, 5, 1], 10, 10, size=lambda n: n) == [[5, 5], [5, 1]]


def test_nothing_to_cut() -> None:
    assert chunks([], 100, 1000) == []


def test_an_item_too_large_alone_is_refused_by_position_not_content() -> None:
    with pytest.raises(ValueError, match="item 1 takes") as caught:
        chunks(["ok", "secret-token" * 100], 10, 100)
    assert "secret-token" not in str(caught.value)


@pytest.mark.parametrize(("max_items", "max_bytes"), [(0, 10), (10, 0), (-1, -1)])
def test_limits_below_one_are_refused(max_items: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        chunks(["a"], max_items, max_bytes)


def test_without_size_only_strings_are_measured() -> None:
    with pytest.raises(TypeError):
        chunks([b"bytes"], 10, 100)  # type: ignore[list-item]


def test_subject_token_chunks_fit_the_gateways_default_limits() -> None:
    assert chunking.DEFAULT_MAX_REQUEST_BYTES == DEFAULT_MAX_REQUEST_BYTES
    assert chunking.REQUEST_ALLOWANCE_BYTES == REQUEST_ALLOWANCE_BYTES
    largest = "t" * DEFAULT_MAX_TOKEN_BYTES
    cut = subject_token_chunks([largest] * 230)
    assert [len(c) for c in cut] == [100, 100, 30]  # the default batch fits by bytes too
    request = pb.BatchDetokenizeRequest(subject_tokens=cut[0], fields=["email"] * 200,
                                        adhoc_reason="x" * 256)
    assert request.ByteSize() <= DEFAULT_MAX_REQUEST_BYTES
    assert batch_request_bytes(100) <= DEFAULT_MAX_REQUEST_BYTES


def test_subject_token_chunks_for_a_gateway_with_a_smaller_limit() -> None:
    cut = subject_token_chunks(["t" * 8000] * 20, max_batch_size=100,
                               max_request_bytes=64 * 1024)
    # (65536 - 16384) // 8003 = 6 per call
    assert [len(c) for c in cut] == [6, 6, 6, 2]
    for chunk in cut:
        assert pb.BatchDetokenizeRequest(subject_tokens=chunk).ByteSize() <= 64 * 1024 - 16384
