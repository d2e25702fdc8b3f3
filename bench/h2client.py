"""The default load generator: gRPC unary calls over raw HTTP/2, in its own process.

    python -m bench.h2client SPEC.json

Reads a `bench.load.LoadSpec`; every call's frames are precomputed (`bench.h2wire`), so
each call carries its own subject token and caller credential for a few tens of µs of CPU.
Closed loop: each connection keeps its share of the calls in flight; a warm-up on tokens of
its own; then the measured phase, bounded by duration AND by the call cap (the planned
sequence's length); then a bounded drain. Prints `measuring` when the measured phase
starts (the benchmark snapshots CPU and audit logs then) and one JSON `LoadResult` line.
A message that fits the windows and one frame is one precomputed write; a larger one (a
BatchDetokenize of 100 tokens) goes in DATA frames as the connection and stream windows
allow (RFC 9113 §6.9).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import h2wire
from bench.load import (
    CONNECT_TIMEOUT_S,
    DRAIN_S,
    LoadResult,
    LoadSpec,
    summarize,
)

RECEIVE_WINDOW = 1 << 30  # large: the server never waits for our window updates
WARMUP, MEASURE, DRAIN = 0, 1, 2


class _Driver:
    """Hands out calls in order and keeps the measured-phase statistics."""

    def __init__(self, spec: LoadSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        authority = spec.target
        blocks = {
            caller: h2wire.grpc_request_headers(authority, spec.path, f"Bearer {token}")
            for caller, token in spec.callers.items()
        }
        # Precomputed per call index (a token, or a batch's group of tokens): (header block
        # of its caller, length-prefixed message).
        self.calls = [(blocks[caller], message) for caller, message in spec.calls()]
        self.phase = WARMUP
        self.warm_position = 0
        self.position = 0
        self.latencies: list[float] = []
        self.ok = 0
        self.errors = 0
        self.connections: list[_Connection] = []
        self.all_connected = False
        self.done: asyncio.Future[None] = loop.create_future()
        now = time.perf_counter()
        self.warm_end = now + spec.warmup_s
        self.measure_start = self.measure_end = self.last_done = math.inf
        self.cpu_start = 0.0

    def next_call(self, now: float) -> tuple[int, bytes, bytes] | None:
        """The next call (phase, header block, message), or None when no more are due."""
        if self.phase == WARMUP:
            if now < self.warm_end and self.spec.warmup:
                index = self.spec.warmup[self.warm_position % len(self.spec.warmup)]
                self.warm_position += 1
                return (WARMUP, *self.calls[index])
            self._start_measuring(now)
        if self.phase == MEASURE:
            if now < self.measure_end and self.position < len(self.spec.sequence):
                index = self.spec.sequence[self.position]
                self.position += 1
                return (MEASURE, *self.calls[index])
            self.phase = DRAIN
        return None

    def _start_measuring(self, now: float) -> None:
        self.phase = MEASURE
        self.measure_start = self.last_done = now
        self.measure_end = now + self.spec.duration_s
        self.cpu_start = time.process_time()
        print("measuring", flush=True)  # the parent snapshots CPU and logs on this line

    def completed(self, phase: int, started: float, ok: bool, now: float) -> None:
        if phase != MEASURE:
            return  # warm-up calls, even those finishing after it, are not measured
        self.latencies.append(now - started)
        self.last_done = now
        if ok:
            self.ok += 1
        else:
            self.errors += 1

    def check_done(self) -> None:
        if not self.all_connected:
            return  # a connection's first frames can arrive before the others exist
        idle = all(c.closed or not c.streams for c in self.connections)
        stuck = all(c.closed for c in self.connections)
        if ((self.phase == DRAIN and idle) or stuck) and not self.done.done():
            self.done.set_result(None)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection keeping `slots` unary calls in flight."""

    def __init__(self, driver: _Driver, slots: int) -> None:
        self.driver = driver
        self.slots = slots
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.next_stream = 1
        self.streams: dict[int, list[Any]] = {}  # stream id -> [phase, started, got DATA]
        self.send_window = h2wire.DEFAULT_WINDOW  # the server's connection window for us
        self.initial_window = h2wire.DEFAULT_WINDOW  # its SETTINGS_INITIAL_WINDOW_SIZE
        # Streams whose message is not all sent (flow control, RFC 9113 §6.9; or larger
        # than a frame): stream id -> [bytes still to send, the stream's window], in order.
        self.pending: dict[int, list[Any]] = {}
        self.unacknowledged = 0  # DATA bytes received since our last WINDOW_UPDATE
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(h2wire.client_preface(RECEIVE_WINDOW))
        self.fill()

    def fill(self) -> None:
        """Start calls until `slots` are in flight or none are due."""
        if self.closed or self.transport is None:
            return
        now = time.perf_counter()
        out: list[bytes] = []
        while len(self.streams) < self.slots:
            call = self.driver.next_call(now)
            if call is None:
                break
            phase, block, message = call
            stream_id = self.next_stream
            self.next_stream += 2
            self.streams[stream_id] = [phase, now, False]
            size = len(message)
            if not self.pending and size <= min(self.send_window, self.initial_window,
                                                h2wire.MAX_FRAME_PAYLOAD):  # fmt: skip
                self.send_window -= size  # the common case: all of it in one DATA frame
                out.append(h2wire.request_frames(stream_id, block, message))
            else:
                out.append(h2wire.frame(h2wire.HEADERS, h2wire.FLAG_END_HEADERS, stream_id, block))
                self.pending[stream_id] = [message, self.initial_window]
        self._pump(out)
        if out:
            self.transport.write(b"".join(out))

    def _pump(self, out: list[bytes]) -> None:
        """Append the DATA frames the windows now allow, oldest stream first."""
        for stream_id, entry in list(self.pending.items()):
            data, window = entry
            while data and self.send_window > 0 and window > 0:
                n = min(len(data), self.send_window, window, h2wire.MAX_FRAME_PAYLOAD)
                chunk, data = data[:n], data[n:]
                flags = 0 if data else h2wire.FLAG_END_STREAM
                out.append(h2wire.frame(h2wire.DATA, flags, stream_id, chunk))
                self.send_window -= n
                window -= n
            if data:
                entry[0], entry[1] = data, window
            else:
                del self.pending[stream_id]
            if self.send_window <= 0:
                break

    def _finish(self, stream_id: int, ok: bool, now: float) -> None:
        self.pending.pop(stream_id, None)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self.driver.completed(stream[0], stream[1], ok and stream[2], now)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        now = time.perf_counter()
        assert self.transport is not None
        replies: list[bytes] = []
        for f in h2wire.take_frames(self.buffer):
            kind = f.type
            if kind == h2wire.DATA:
                self.unacknowledged += f.length
                stream = self.streams.get(f.stream_id)
                if stream is not None:
                    stream[2] = True
                    if f.flags & h2wire.FLAG_END_STREAM:  # no trailers: no grpc-status
                        stream[2] = False
                        self._finish(f.stream_id, False, now)
            elif kind == h2wire.HEADERS:
                if f.flags & h2wire.FLAG_END_STREAM:  # trailers (or Trailers-Only: an error)
                    self._finish(f.stream_id, True, now)
            elif kind == h2wire.RST_STREAM:
                self._finish(f.stream_id, False, now)
            elif kind == h2wire.SETTINGS and not f.flags & h2wire.FLAG_ACK:
                window = h2wire.parse_settings(f.payload).get(h2wire.SETTINGS_INITIAL_WINDOW_SIZE)
                if window is not None:  # §6.9.2: open streams' windows move by the change
                    for entry in self.pending.values():
                        entry[1] += window - self.initial_window
                    self.initial_window = window
                replies.append(h2wire.frame(h2wire.SETTINGS, h2wire.FLAG_ACK, 0))
            elif kind == h2wire.PING and not f.flags & h2wire.FLAG_ACK:
                replies.append(h2wire.frame(h2wire.PING, h2wire.FLAG_ACK, 0, f.payload))
            elif kind == h2wire.WINDOW_UPDATE:
                increment = int.from_bytes(f.payload[:4], "big") & 0x7FFFFFFF
                if f.stream_id == 0:
                    self.send_window += increment
                elif f.stream_id in self.pending:
                    self.pending[f.stream_id][1] += increment
            elif kind == h2wire.GOAWAY:
                self.closed = True  # the server is going away: start nothing new here
                code = int.from_bytes(f.payload[4:8], "big")
                print(f"GOAWAY error code {code}: {f.payload[8:200]!r}", file=sys.stderr)
        if self.unacknowledged > RECEIVE_WINDOW // 2:
            replies.append(h2wire.window_update(0, self.unacknowledged))
            self.unacknowledged = 0
        if self.pending:
            self._pump(replies)
        if replies:
            self.transport.write(b"".join(replies))
        self.fill()
        self.driver.check_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            print(f"connection lost: {exc!r}", file=sys.stderr)
        self.closed = True
        now = time.perf_counter()
        for stream_id in list(self.streams):
            self._finish(stream_id, False, now)
        self.driver.check_done()


async def generate(spec: LoadSpec) -> LoadResult:
    """Run the load described by `spec` against a gRPC server; bounded in time and count."""
    loop = asyncio.get_running_loop()
    driver = _Driver(spec, loop)
    host, _, port = spec.target.rpartition(":")
    for slots in spec.per_connection:
        _, protocol = await asyncio.wait_for(
            loop.create_connection(functools.partial(_Connection, driver, slots), host, int(port)),
            CONNECT_TIMEOUT_S,
        )
        driver.connections.append(protocol)
    driver.all_connected = True
    driver.check_done()
    hard_limit = spec.warmup_s + spec.duration_s + DRAIN_S + 1.0
    notes: list[str] = []
    try:
        await asyncio.wait_for(asyncio.shield(driver.done), hard_limit)
    except TimeoutError:
        notes.append("drain timed out: calls still in flight were counted as errors")
    stranded = sum(1 for c in driver.connections for s in c.streams.values() if s[0] == MEASURE)
    for connection in driver.connections:
        connection.closed = True  # our own close, not a lost connection
        if connection.transport is not None:
            connection.transport.close()
    if driver.phase == WARMUP:
        notes.append("the measured phase never started")
        driver.measure_start = driver.last_done = time.perf_counter()
    cpu = time.process_time() - driver.cpu_start
    return LoadResult(
        calls=len(driver.latencies) + stranded,
        ok=driver.ok,
        errors=driver.errors + stranded,
        elapsed_s=max(driver.last_done - driver.measure_start, 1e-9),
        sent=driver.position,
        generator_cpu_s=cpu,
        notes=notes,
        **summarize(driver.latencies)._asdict(),
    )


def main() -> int:
    """Run the spec named on the command line; print `measuring`, then the JSON result."""
    spec = LoadSpec.load(Path(sys.argv[1]))
    if spec.loop == "uvloop":
        import uvloop

        result = uvloop.run(generate(spec))
    else:
        result = asyncio.run(generate(spec))
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
