"""vault.http1.AnswerReader: the vault's HTTP/1.1 answers, as bytes from the network.

No sockets: the bytes go to the reader as a connection would deliver them, in pieces cut
at points drawn from the input, then the connection's end. Byte 0 picks the mode, byte 1
seeds the cuts and the limits; the rest (maybe `expand`ed) is:

- byte 0 even, "raw": the server's answer itself. It is read twice, whole and cut, and
  both reads must end the same way (same status and body, or the same error), except
  where rule 3's framing bound may fire at different points of a long input;
- byte 0 odd, "framed": a body. The harness frames it (Content-Length, chunked with sizes
  drawn from the input, or up to the close; sometimes after a 100 Continue and with
  extra headers) and the read must give back exactly that body, or `TooLarge` when the
  body is over the cap.

Documented errors: `HeadRefused`, `TooLarge`, `EndedEarly`, `ConnectionClosed`, each with
one of the module's own fixed messages (never a byte of the answer). Oracles: a body is
never over the cap, a status is a final one (200-999), and the two oracles above.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from piigate.vault import http1
from tests.fuzz.targets import Finding, expand

DOCUMENTED = (http1.HeadRefused, http1.TooLarge, http1.EndedEarly, http1.ConnectionClosed)
CAPS = (0, 1, 16, 256, 4096, 1 << 20)
# Messages the reader's errors may carry: the literals in its own source.
MESSAGES = frozenset(re.findall(
    r'(?:HeadRefused|TooLarge|EndedEarly|ConnectionClosed)\("([^"]+)"\)',
    Path(http1.__file__).read_text()))  # fmt: skip
Outcome = tuple[int, bytes] | type[BaseException]


def fuzz(data: bytes) -> None:
    if len(data) < 2:
        return
    rng = random.Random(data[1])
    cap = rng.choice(CAPS)
    if data[0] % 2 == 0:
        limits = http1.Limits(max_head_bytes=rng.choice((64, 512, 32 * 1024)),
                              max_headers=rng.choice((2, 8, 128)))  # fmt: skip
        answer = expand(data[2:])
        clean = rng.random() < 0.8
        whole = _read(answer, [len(answer)], cap, limits, clean)
        cut = _read(answer, _cuts(rng, len(answer)), cap, limits, clean)
        framing_bound = len(answer) > limits.max_head_bytes and http1.TooLarge in (whole, cut)
        if whole != cut and not framing_bound:
            raise Finding(f"the same answer read two ways: {_show(whole)} / {_show(cut)}")
    else:
        body = expand(data[2:])
        answer, close_delimited = _framed(rng, body)
        outcome = _read(answer, _cuts(rng, len(answer)), cap, http1.Limits(), True)
        expected: Outcome = (200, body) if len(body) <= cap else http1.TooLarge
        if outcome != expected:
            raise Finding(f"a framed body of {len(body)} bytes (cap {cap}, close-delimited "
                          f"{close_delimited}) read as {_show(outcome)}")


def _read(answer: bytes, cuts: list[int], cap: int, limits: http1.Limits,
          clean: bool) -> Outcome:  # fmt: skip
    reader = http1.AnswerReader(cap, limits)
    try:
        start = 0
        for end in cuts:
            done = reader.feed(answer[start:end])
            start = end
            if done is not None:
                break
        else:
            done = reader.end(clean)
    except DOCUMENTED as exc:
        if str(exc) not in MESSAGES:
            raise Finding(f"an error message that is not the module's own: {exc}") from exc
        return type(exc)
    if len(done.body) > cap:
        raise Finding(f"a body of {len(done.body)} bytes over the cap of {cap}")
    if not 200 <= done.status <= 999:
        raise Finding(f"an answer with a non-final status {done.status}")
    return done.status, done.body


def _cuts(rng: random.Random, size: int) -> list[int]:
    """Increasing cut points ending at `size`: one to eight pieces, sometimes single bytes."""
    if size == 0:
        return [0]
    points = sorted({rng.randrange(1, size + 1) for _ in range(rng.randrange(0, 8))})
    return [p for p in points if p < size] + [size]


def _framed(rng: random.Random, body: bytes) -> tuple[bytes, bool]:
    """`body` as a 200 answer, framed one of three ways; and whether it is close-delimited."""
    head = b"HTTP/1.1 100 Continue\r\n\r\n" if rng.random() < 0.2 else b""
    head += b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    head += b"".join(b"X-%d: %d\r\n" % (n, rng.randrange(1 << 30)) for n in range(rng.randrange(4)))
    framing = rng.randrange(3)
    if framing == 0:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, False
    if framing == 1:
        chunks, at = [], 0
        while at < len(body):
            size = rng.choice((1, 7, 64, 1000, 1 << 16))
            piece = body[at:at + size]
            chunks.append(b"%x\r\n%s\r\n" % (len(piece), piece))
            at += size
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n", False
    return head + b"Connection: close\r\n\r\n" + body, True


def _show(outcome: Outcome) -> str:
    if isinstance(outcome, tuple):
        return f"status {outcome[0]}, {len(outcome[1])} bytes"
    return outcome.__name__
