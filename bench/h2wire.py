"""Just enough HTTP/2 (RFC 9113) and HPACK (RFC 7541) to send gRPC unary calls, pure.

The load generator (`bench.load`) precomputes every request's bytes with these helpers so
that sending a call costs two small `struct.pack`s and one write, not a Python gRPC stack.

Deliberate limits, because the peer is always a gRPC server on loopback that we start:
- requests are encoded as HPACK literals without indexing (§6.2.2), never Huffman-coded,
  so the encoder keeps no dynamic table and every header block stands alone;
- responses are never HPACK-decoded. A unary gRPC call that succeeded carries its message
  in DATA before the trailers; a failed one is "Trailers-Only" (gRPC over HTTP/2 spec:
  HEADERS with END_STREAM and no DATA). So DATA-before-END_STREAM means OK, and a stream
  that ends without DATA, or is reset, is counted as an error. The benchmark cross-checks
  this against piigate's own audit outcomes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and flags.
DATA = 0x0
HEADERS = 0x1
RST_STREAM = 0x3
SETTINGS = 0x4
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4

# SETTINGS identifiers (§6.5.2).
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4

DEFAULT_WINDOW = 65_535  # §6.9.2: every window starts here until SETTINGS/WINDOW_UPDATE
MAX_WINDOW = 2**31 - 1
MAX_FRAME_PAYLOAD = 16_384  # §4.2 default SETTINGS_MAX_FRAME_SIZE: we never send more
FRAME_HEADER = struct.Struct(">I B I")  # length(24) + type(8) | flags(8) + stream(32)
_HEADER_LEN = 9


def hpack_int(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    """HPACK integer with an N-bit prefix (RFC 7541 §5.1); `first_byte` holds the flags."""
    if value < 0:
        raise ValueError("HPACK integers are non-negative")
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte | value])
    out = bytearray([first_byte | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(text: str) -> bytes:
    """A raw (not Huffman-coded) string literal (§5.2)."""
    data = text.encode("ascii")  # header values here are ASCII; refuse anything else
    return hpack_int(len(data), 7) + data


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """Literal Header Field without Indexing, New Name (§6.2.2, first byte 0x00) for each
    header: no dynamic-table state, so a block can be reused on any connection."""
    return b"".join(b"\x00" + hpack_string(name) + hpack_string(value) for name, value in headers)


def grpc_request_headers(authority: str, path: str, authorization: str | None) -> bytes:
    """The header block of a gRPC unary call (pseudo-headers first, §8.3)."""
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),  # required by gRPC over HTTP/2
    ]
    if authorization is not None:
        headers.append(("authorization", authorization))
    return header_block(headers)


def grpc_message(serialized: bytes) -> bytes:
    """Length-prefixed message: uncompressed flag + 4-byte big-endian length + bytes."""
    return b"\x00" + len(serialized).to_bytes(4, "big") + serialized


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame (§4.1)."""
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise ValueError("payload larger than the default maximum frame size")
    return FRAME_HEADER.pack((len(payload) << 8) | frame_type, flags, stream_id) + payload


def settings_frame(settings: dict[int, int]) -> bytes:
    payload = b"".join(struct.pack(">HI", key, value) for key, value in settings.items())
    return frame(SETTINGS, 0, 0, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def client_preface(window: int) -> bytes:
    """Preface, SETTINGS (no push, a large stream window) and a connection WINDOW_UPDATE,
    so the server never waits on our receive windows during a bounded run."""
    settings = {SETTINGS_ENABLE_PUSH: 0, SETTINGS_INITIAL_WINDOW_SIZE: window}
    return PREFACE + settings_frame(settings) + window_update(0, window - DEFAULT_WINDOW)


def request_frames(stream_id: int, headers: bytes, message: bytes) -> bytes:
    """HEADERS (END_HEADERS) + DATA (END_STREAM) for one unary call."""
    return frame(HEADERS, FLAG_END_HEADERS, stream_id, headers) + frame(
        DATA, FLAG_END_STREAM, stream_id, message
    )


@dataclass(frozen=True, slots=True)
class Frame:
    """A received frame; the payload is kept only for the types that need it."""

    type: int
    flags: int
    stream_id: int
    length: int
    payload: bytes


_NEED_PAYLOAD = frozenset({SETTINGS, PING, WINDOW_UPDATE, GOAWAY, RST_STREAM})


def take_frames(buffer: bytearray) -> list[Frame]:
    """The complete frames at the front of `buffer`, removed from it; a partial frame
    stays for the next call."""
    frames: list[Frame] = []
    pos = 0
    size = len(buffer)
    while size - pos >= _HEADER_LEN:
        word, flags, stream_id = FRAME_HEADER.unpack_from(buffer, pos)
        end = pos + _HEADER_LEN + (word >> 8)
        if end > size:
            break
        frame_type = word & 0xFF
        payload = bytes(buffer[pos + _HEADER_LEN : end]) if frame_type in _NEED_PAYLOAD else b""
        frames.append(Frame(frame_type, flags, stream_id & 0x7FFFFFFF, word >> 8, payload))
        pos = end
    del buffer[:pos]
    return frames


def parse_settings(payload: bytes) -> dict[int, int]:
    """SETTINGS payload → {identifier: value} (§6.5.1)."""
    return {
        key: value
        for key, value in (struct.unpack_from(">HI", payload, i) for i in range(0, len(payload), 6))
    }
