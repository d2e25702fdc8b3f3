"""The audit-trail verifier (`piigate.audit.verify`) on hostile and on tampered trails.

Input: the first byte picks a mode. Mode 0 (even): the rest is the trail's file, read
with `read_lines` as `piigate audit verify` does, and checked against the hash its first
line starts with. Mode 1 (odd): the first line of the rest names one tampering (delete,
swap, edit a byte, insert, truncate); its other lines become the events of a valid trail
the harness chains itself, then tampers with, then verifies.

The verifier has no documented error: it must never raise. Oracles: its line count is
the input's; an untouched trail verifies; any change to a trail, checked against its
true last hash, is caught.
"""

from __future__ import annotations

import io
import json

from piigate.audit.format import GENESIS_HASH, chain_line
from piigate.audit.verify import read_lines, verify_chain
from tests.fuzz.targets import Finding, expand

MAX_LINES = 64


def fuzz(data: bytes) -> None:
    data = expand(data)
    if not data:
        return
    if data[0] % 2 == 0:
        lines = list(read_lines(io.BytesIO(data[1:])))[:MAX_LINES]
        expect = lines[0].decode("latin-1")[:64] if lines else None
        result = verify_chain(lines, expect_last=expect or None)
        if result.lines != len(lines) or result.ok != (result.broken_at is None):
            raise Finding(f"inconsistent result {result!r}")
        return
    order, _, rest = data[1:].partition(b"\n")
    events = rest.split(b"\n")[:MAX_LINES]
    trail = _chain(events)
    last = trail[-1][1] if trail else GENESIS_HASH
    lines = [line.encode("ascii") for line, _ in trail]
    if not verify_chain(lines, expect_last=last).ok:
        raise Finding("an untouched trail does not verify")
    tampered = _tamper(lines, order)
    result = verify_chain(tampered, expect_last=last)
    if tampered != lines and result.ok:
        raise Finding(f"a tampered trail verifies: {tampered!r}")


def _chain(events: list[bytes]) -> list[tuple[str, str]]:
    trail: list[tuple[str, str]] = []
    prev = GENESIS_HASH
    for number, text in enumerate(events):
        event = json.dumps({"n": number, "text": text.decode("latin-1")})
        line, prev = chain_line(event, prev)
        trail.append((line, prev))
    return trail


def _tamper(lines: list[bytes], order: bytes) -> list[bytes]:
    if not lines or len(order) < 3:
        return lines
    kind, at, other = order[0] % 5, order[1] % len(lines), order[2]
    out = list(lines)
    if kind == 0:
        del out[at]
    elif kind == 1:
        j = other % len(lines)
        out[at], out[j] = out[j], out[at]
    elif kind == 2 and out[at]:
        line = bytearray(out[at])
        line[other % len(line)] = order[3] if len(order) > 3 else 0x20
        out[at] = bytes(line)
    elif kind == 3:
        out.insert(at, out[other % len(lines)])
    else:
        del out[at:]
    return out
