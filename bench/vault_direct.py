"""The `direct-vault` rows: the detokenize piigate makes, sent straight to the same vault.

    python -m bench.vault_direct SPEC.json      (started by the benchmark, like bench.h2client)

What a gateway adds to a lone call is read against this: the same vault, the same HTTP
request piigate's vault client sends, with no gateway in between. The request is not
rebuilt by hand: `capture_templates` has piigate's own `VaultClient` (its own HTTP/1.1
pool, `piigate.vault.http1`) send one detokenize per profile to a capturing socket, and
keeps the bytes it sent (request line, query order and encoding, its headers); each
planned call then differs only in its vault token id and its `custom_audit` request id,
exactly as piigate's calls do. The profiles' properties, reasons and keys are the demo
configuration's (`piigate_dev.demo.gateway_config`); a mismatch would be refused by the
vault's key policies, which the preflight (`preflight`) checks against the seeded records.

The generator is HTTP/1.1 keep-alive on asyncio protocols, one request at a time per
connection (as a connection pool does), so N in flight is N connections. It parses just
enough of the answer to find its end (status line, `Content-Length`; the local vault always
declares it) and counts a call as OK when the status is 200 and the body is a detokenize
answer. Closed loop, warm-up, then a measured phase bounded by duration and call count,
then a bounded drain; it prints `measuring` and one JSON `bench.load.LoadResult` line,
as `bench.h2client` does, so `bench.load.run_generator` drives both.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from bench.load import CONNECT_TIMEOUT_S, DRAIN_S, LoadResult, summarize
from bench.stack import SubjectToken, person
from piigate.vault.client import DetokenizeQuery, VaultClient

TOKEN_MARK = "TOKENIDMARK"
REF_MARK = "REQUESTREFMARK"
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class VaultProfile:
    """What piigate asks the vault for one demo profile (`piigate_dev.demo`)."""

    props: tuple[str, ...]
    reason: str


# caller -> its profile's vault read, in the profile's field order (`Plan.vault_props`)
PROFILES = {
    "fhir-app": VaultProfile(("user_id",), "AppFunctionality"),
    "support-tool": VaultProfile(("ssn.mask", "email.mask"), "AccountManagement"),
}


@dataclass
class DirectSpec:
    """One direct-vault run, written as JSON for the generator process."""

    target: str  # host:port of the vault (or of the delay proxy in front of it)
    connections: int  # = calls in flight (HTTP/1.1: one request per connection at a time)
    duration_s: float
    warmup_s: float
    requests: list[str]  # raw HTTP requests (latin-1), one per token
    warmup: list[int]
    sequence: list[int]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> DirectSpec:
        return cls(**json.loads(path.read_text()))


# --- the request piigate sends ---------------------------------------------------------------
async def capture_templates(api_keys: dict[str, str]) -> dict[str, str]:
    """Per caller, the raw request piigate's vault client sends for a one-token detokenize
    (token id TOKEN_MARK, request id REF_MARK, Host `HOSTMARK`)."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n[]")  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    templates: dict[str, str] = {}
    client = VaultClient(f"http://127.0.0.1:{port}", MAX_BODY_BYTES, max_connections=4)
    try:
        for caller, profile in PROFILES.items():
            query = DetokenizeQuery(
                collection="users", token_ids=(TOKEN_MARK,), props=profile.props,
                reason=profile.reason, adhoc_reason=None, api_key=api_keys[caller],
                custom_audit=f"piigate request {REF_MARK}",
            )  # fmt: skip
            await client.detokenize(query, 5.0)
            head = heads[-1].decode("latin-1")
            templates[caller] = head.replace(f"127.0.0.1:{port}", "HOSTMARK")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    return templates


def requests_for(
    templates: dict[str, str], tokens: Sequence[SubjectToken], token_ids: Sequence[str],
    host: str,
) -> list[str]:  # fmt: skip
    """One raw request per subject token: its caller's template with its user's vault token
    id and a fresh 32-hex request id, as piigate's own call would carry."""
    out = []
    for t in tokens:
        request = templates[t.caller].replace("HOSTMARK", host)
        out.append(request.replace(TOKEN_MARK, token_ids[t.user]).replace(
            REF_MARK, os.urandom(16).hex()))  # fmt: skip
    return out


# --- preflight ---------------------------------------------------------------------------------
def preflight(target: str, requests: Sequence[str], tokens: Sequence[SubjectToken]) -> list[str]:
    """Send each request once on one connection; the problems found (none: OK)."""
    host, _, port = target.rpartition(":")
    problems: list[str] = []
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        stream = sock.makefile("rb")
        for request, token in zip(requests, tokens, strict=True):
            sock.sendall(request.encode("latin-1"))
            status, body = _read_answer(stream)
            if status != 200:
                problems.append(f"{token.caller}: vault status {status}")
                continue
            items = json.loads(body)
            fields = items[0]["fields"] if items else {}
            if not _as_expected(fields, token):
                problems.append(f"{token.caller}: unexpected answer for user {token.user}")
    return problems


def _read_answer(stream: Any) -> tuple[int, bytes]:
    status_line = stream.readline(MAX_HEAD_BYTES)
    length = 0
    while (line := stream.readline(MAX_HEAD_BYTES)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status_line.split()[1]), stream.read(min(length, MAX_BODY_BYTES))


def _as_expected(fields: dict[str, Any], token: SubjectToken) -> bool:
    record = person(token.user)
    if token.caller == "fhir-app":
        return bool(fields.get("user_id") == record["user_id"])
    return str(fields.get("ssn.mask", "")).endswith(record["ssn"][-4:])


# --- the generator -----------------------------------------------------------------------------
WARMUP, MEASURE, DRAIN = 0, 1, 2


class _Driver:
    def __init__(self, spec: DirectSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.requests = [r.encode("latin-1") for r in spec.requests]
        self.phase = WARMUP
        self.warm_position = self.position = 0
        self.latencies: list[float] = []
        self.ok = self.errors = 0
        self.busy = 0
        self.done: asyncio.Future[None] = loop.create_future()
        self.warm_end = time.perf_counter() + spec.warmup_s
        self.measure_start = self.measure_end = self.last_done = math.inf
        self.cpu_start = 0.0

    def next_request(self, now: float) -> tuple[int, bytes] | None:
        if self.phase == WARMUP:
            if now < self.warm_end and self.spec.warmup:
                index = self.spec.warmup[self.warm_position % len(self.spec.warmup)]
                self.warm_position += 1
                return WARMUP, self.requests[index]
            self.phase = MEASURE
            self.measure_start = self.last_done = now
            self.measure_end = now + self.spec.duration_s
            self.cpu_start = time.process_time()
            print("measuring", flush=True)
        if self.phase == MEASURE:
            if now < self.measure_end and self.position < len(self.spec.sequence):
                index = self.spec.sequence[self.position]
                self.position += 1
                return MEASURE, self.requests[index]
            self.phase = DRAIN
        return None

    def completed(self, phase: int, started: float, ok: bool, now: float) -> None:
        if phase == MEASURE:
            self.latencies.append(now - started)
            self.last_done = now
            if ok:
                self.ok += 1
            else:
                self.errors += 1

    def idle(self) -> None:
        self.busy -= 1
        if self.busy == 0 and self.phase == DRAIN and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current: tuple[int, float] | None = None
        self.body_at = self.body_end = -1
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.driver.busy += 1
        self.send()

    def send(self) -> None:
        now = time.perf_counter()
        call = self.driver.next_request(now)
        if call is None or self.transport is None:
            self.current = None
            self.driver.idle()
            return
        phase, request = call
        self.current = (phase, now)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.body_end < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self._fail()
                return
            head = bytes(self.buffer[:end]).split(b"\r\n")
            self.status = int(head[0].split()[1])
            length = next((int(v) for n, _, v in (h.partition(b":") for h in head[1:])
                           if n.strip().lower() == b"content-length"), -1)  # fmt: skip
            if length < 0:
                self._fail()  # the local vault always declares the length
                return
            self.body_at, self.body_end = end + 4, end + 4 + length
        if len(self.buffer) < self.body_end:
            return
        ok = self.status == 200 and self.buffer.startswith(b'[{"token_id"', self.body_at)
        del self.buffer[: self.body_end]
        self.body_at = self.body_end = -1
        if self.current is not None:
            self.driver.completed(*self.current, ok, time.perf_counter())
        self.send()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.current is not None:
            self.driver.completed(*self.current, False, time.perf_counter())
            self.current = None
            self.driver.idle()
        self.transport = None


async def generate(spec: DirectSpec) -> LoadResult:
    loop = asyncio.get_running_loop()
    driver = _Driver(spec, loop)
    host, _, port = spec.target.rpartition(":")
    connections = []
    for _ in range(spec.connections):
        _, protocol = await asyncio.wait_for(
            loop.create_connection(functools.partial(_Connection, driver), host, int(port)),
            CONNECT_TIMEOUT_S,
        )
        connections.append(protocol)
    notes: list[str] = []
    try:
        await asyncio.wait_for(asyncio.shield(driver.done),
                               spec.warmup_s + spec.duration_s + DRAIN_S + 1.0)  # fmt: skip
    except TimeoutError:
        notes.append("drain timed out: calls still in flight were counted as errors")
    stranded = sum(1 for c in connections if c.current is not None and c.current[0] == MEASURE)
    for c in connections:
        c.current = None
        if c.transport is not None:
            c.transport.close()
    if driver.phase == WARMUP:
        notes.append("the measured phase never started")
        driver.measure_start = driver.last_done = time.perf_counter()
    return LoadResult(
        calls=len(driver.latencies) + stranded, ok=driver.ok, errors=driver.errors + stranded,
        elapsed_s=max(driver.last_done - driver.measure_start, 1e-9), sent=driver.position,
        generator_cpu_s=time.process_time() - driver.cpu_start, notes=notes,
        **summarize(driver.latencies)._asdict(),
    )  # fmt: skip


def main() -> int:
    spec = DirectSpec.load(Path(sys.argv[1]))
    result = asyncio.run(generate(spec))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
