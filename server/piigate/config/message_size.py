"""Whether a full batch fits in one gRPC message: `server.max_batch_size` against
`server.max_request_bytes`.

gRPC refuses a message larger than the server's receive limit before piigate's code
runs (RESOURCE_EXHAUSTED with grpc's own text, no ErrorInfo, no audit event), so a batch
size the limit cannot carry is a configuration mistake: it is reported at start-up, with
both keys, instead of failing every full batch a support tool sends.

The arithmetic is the protobuf wire format (protobuf.dev "Encoding"): each entry of
`repeated string subject_tokens = 1` is a one-byte tag, its length as a varint, and its
bytes. Subject tokens are refused past `tokens.jws.DEFAULT_MAX_TOKEN_BYTES` (rule 1), so
a batch of `max_batch_size` tokens of that size, plus an allowance for the request's
other fields, is what the limit must hold.
"""

from __future__ import annotations

from piigate.config.reader import Reader
from piigate.tokens.jws import DEFAULT_MAX_TOKEN_BYTES

# The request besides its tokens: `fields` (property names of at most 64 characters, so
# about 240 of them), `reason` and an `adhoc_reason` of at most 256 characters.
REQUEST_ALLOWANCE_BYTES = 16 * 1024
# 100 tokens of 8 KiB need 835,884 bytes: 1 MiB holds the default batch (up to 125 such
# tokens) and stays below grpc's own default of 4 MiB.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# What piigate lets grpc send, and what grpc clients (Python, grpc-js, Go, Java) accept
# by default: a batch's answer must fit both (see README, "Configuration").
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def varint_bytes(value: int) -> int:
    """Bytes of `value` (>= 0) as a protobuf varint: 7 bits per byte."""
    return max(1, (value.bit_length() + 6) // 7)


def token_entry_bytes(token_bytes: int) -> int:
    """Wire bytes of one `subject_tokens` entry of `token_bytes` bytes."""
    return 1 + varint_bytes(token_bytes) + token_bytes


def batch_request_bytes(batch_size: int, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> int:
    """The largest BatchDetokenizeRequest piigate must accept for `batch_size` tokens."""
    return batch_size * token_entry_bytes(max_token_bytes) + REQUEST_ALLOWANCE_BYTES


def check_batch_fits(
    r: Reader,
    max_batch_size: int,
    max_request_bytes: int,
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
) -> None:
    """A problem naming both keys when a full batch of the largest tokens piigate accepts
    cannot fit in one message (values that are not positive are reported elsewhere)."""
    if max_batch_size <= 0 or max_request_bytes <= 0:
        return
    needed = batch_request_bytes(max_batch_size, max_token_bytes)
    if needed <= max_request_bytes:
        return
    fits = (max_request_bytes - REQUEST_ALLOWANCE_BYTES) // token_entry_bytes(max_token_bytes)
    remedy = (f" or lower server.max_batch_size to at most {fits}" if fits >= 1
              else " (it cannot hold even one subject token)")
    r.problem("server.max_request_bytes", f"{max_request_bytes} bytes cannot hold a full "
              f"batch: server.max_batch_size = {max_batch_size} subject tokens of up to "
              f"{max_token_bytes} bytes need {needed} bytes (with "
              f"{REQUEST_ALLOWANCE_BYTES} for the rest of the request); raise "
              f"server.max_request_bytes to at least {needed}{remedy}")
