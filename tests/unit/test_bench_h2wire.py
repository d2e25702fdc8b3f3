"""The benchmark's HTTP/2 and HPACK encoding: RFC examples and frame round trips."""

from __future__ import annotations

import struct

import pytest

from bench import h2wire


@pytest.mark.parametrize(
    ("value", "prefix", "encoded"),
    [
        (10, 5, b"\x0a"),  # RFC 7541 C.1.1
        (1337, 5, b"\x1f\x9a\x0a"),  # RFC 7541 C.1.2
        (42, 8, b"\x2a"),  # RFC 7541 C.1.3
        (127, 7, b"\x7f\x00"),  # exactly the prefix limit needs a continuation byte
    ],
)
def test_hpack_integers_match_the_rfc_examples(value: int, prefix: int, encoded: bytes) -> None:
    assert h2wire.hpack_int(value, prefix) == encoded


def test_a_header_is_a_literal_without_indexing_with_a_new_name() -> None:
    assert h2wire.header_block([("te", "trailers")]) == b"\x00\x02te\x08trailers"


def test_long_values_get_multi_byte_lengths() -> None:
    block = h2wire.header_block([("authorization", "x" * 900)])
    assert block[:15] == b"\x00\x0dauthorization"
    assert block[15:18] == b"\x7f\x85\x06"  # 127 + 773, 773 as 7-bit groups (RFC 7541 5.1)
    assert len(block) == 15 + 3 + 900


def test_grpc_headers_put_pseudo_headers_first() -> None:
    block = h2wire.grpc_request_headers("127.0.0.1:1", "/p.S/M", "Bearer t")
    names = [b":method", b":scheme", b":path", b":authority", b"content-type", b"te"]
    positions = [block.index(name) for name in names]
    assert positions == sorted(positions)
    assert block.endswith(b"\x0dauthorization\x08Bearer t")


def test_grpc_message_is_length_prefixed_and_uncompressed() -> None:
    assert h2wire.grpc_message(b"abc") == b"\x00\x00\x00\x00\x03abc"


def test_request_frames_are_headers_then_data_ending_the_stream() -> None:
    buffer = bytearray(h2wire.request_frames(7, b"HDRS", b"BODY"))
    headers, data = h2wire.take_frames(buffer)
    assert (headers.type, headers.flags, headers.stream_id, headers.length) == (
        h2wire.HEADERS, h2wire.FLAG_END_HEADERS, 7, 4,
    )  # fmt: skip
    assert (data.type, data.flags, data.stream_id, data.length) == (
        h2wire.DATA, h2wire.FLAG_END_STREAM, 7, 4,
    )  # fmt: skip
    assert buffer == b""


def test_a_partial_frame_stays_in_the_buffer() -> None:
    ping = h2wire.frame(h2wire.PING, 0, 0, b"12345678")
    buffer = bytearray(ping + ping[:5])
    (frame,) = h2wire.take_frames(buffer)
    assert frame.payload == b"12345678"
    assert buffer == ping[:5]
    buffer += ping[5:]
    assert [f.type for f in h2wire.take_frames(buffer)] == [h2wire.PING]


def test_the_preface_opens_every_window_wide() -> None:
    preface = h2wire.client_preface(1 << 30)
    assert preface.startswith(h2wire.PREFACE)
    settings, update = h2wire.take_frames(bytearray(preface[len(h2wire.PREFACE) :]))
    assert h2wire.parse_settings(settings.payload) == {
        h2wire.SETTINGS_ENABLE_PUSH: 0,
        h2wire.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 30,
    }
    assert update.type == h2wire.WINDOW_UPDATE
    assert update.stream_id == 0
    assert struct.unpack(">I", update.payload)[0] == (1 << 30) - h2wire.DEFAULT_WINDOW


def test_oversized_payloads_are_refused() -> None:
    with pytest.raises(ValueError, match="frame size"):
        h2wire.frame(h2wire.DATA, 0, 1, b"x" * (h2wire.MAX_FRAME_PAYLOAD + 1))
