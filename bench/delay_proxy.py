"""A remote vault on loopback: a TCP relay that holds every byte for a while each way.

    python -m bench.delay_proxy --upstream http://127.0.0.1:PORT [--delay-ms 1.0]
                                [--listen 127.0.0.1:0]

A SaaS vault is a few milliseconds away; the local vault is microseconds away. This relay
sits between a client and the local vault and delivers every chunk `--delay-ms` after it
arrived, in each direction, so one request/response round trip on a kept-alive
connection gains twice that (2 ms with the default 1 ms): what a remote vault's network
adds, and nothing else. It works below HTTP (keep-alive, pipelining and framing are the
client's and the vault's), keeps each direction's bytes in order (one queue and one timer
per direction), and never changes a byte. Connection setup is not delayed (a pooled
client pays it once).

The delay rests on the event loop's timers (the standard loop: its epoll wait rounds up
to whole milliseconds), so a chunk is held between `--delay-ms` and about a millisecond
more on a busy core; the benchmark's `direct-vault-remote` row measures what it really
adds. It prints `listening on http://HOST:PORT` (the benchmark's child convention) and
runs until SIGTERM; every connection is closed with its peer.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections import deque
from typing import cast
from urllib.parse import urlsplit

MAX_QUEUED_BYTES = 8 * 1024 * 1024  # per direction; past it the reader is paused


class _Delayed:
    """One direction: chunks delivered to `out` `delay_s` after they arrived, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        self.loop = loop
        self.delay_s = delay_s
        self.out: asyncio.Transport | None = None
        self.source: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def push(self, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay_s, data))
        self.queued += len(data)
        if self.queued > MAX_QUEUED_BYTES and self.source is not None:
            self.source.pause_reading()
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)

    def attach(self, out: asyncio.Transport) -> None:
        """The far end is connected: deliver what waited for it, when due."""
        self.out = out
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)

    def close_after_queue(self) -> None:
        self.closing = True
        if not self.queue:
            self._close_out()

    def _deliver(self) -> None:
        self.timer = None
        if self.out is None:
            return  # the upstream is still connecting: `attach` resumes
        now = self.loop.time()
        ready: list[bytes] = []
        while self.queue and self.queue[0][0] <= now:
            ready.append(self.queue.popleft()[1])
        if ready:
            data = b"".join(ready)
            self.queued -= len(data)
            self.out.write(data)
            if self.queued <= MAX_QUEUED_BYTES // 2 and self.source is not None:
                self.source.resume_reading()
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._deliver)
        elif self.closing:
            self._close_out()

    def _close_out(self) -> None:
        if self.out is not None:
            self.out.close()


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives goes into `forward`."""

    def __init__(self, forward: _Delayed, backward: _Delayed) -> None:
        self.forward = forward
        self.backward = backward  # its `out` is this side's transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.backward.attach(cast(asyncio.Transport, transport))
        self.forward.source = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.forward.push(data)

    def eof_received(self) -> bool:
        self.forward.close_after_queue()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.forward.close_after_queue()


class _ClientSide(_Side):
    """The accepted end: connects to the upstream once the client is in."""

    def __init__(self, upstream: tuple[str, int], delay_s: float,
                 tasks: set[asyncio.Task[None]]) -> None:  # fmt: skip
        loop = asyncio.get_running_loop()
        super().__init__(_Delayed(loop, delay_s), _Delayed(loop, delay_s))
        self.upstream = upstream
        self.tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        task = asyncio.get_running_loop().create_task(self._connect(transport))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self, client: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Side(self.backward, self.forward), *self.upstream)  # fmt: skip
        except OSError:
            client.close()
            return
        if client.is_closing():  # the client left while we connected
            upstream.close()


async def start_relay(
    upstream: tuple[str, int], listen: tuple[str, int], delay_s: float
) -> asyncio.Server:
    """The relay, serving on the running loop; close the server to stop accepting."""
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ClientSide(upstream, delay_s, tasks), *listen)


async def relay(upstream: tuple[str, int], listen: tuple[str, int], delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await start_relay(upstream, listen, delay_s)
    host, port = server.sockets[0].getsockname()[:2]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://{host}:{port}", flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the vault")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--delay-ms", type=float, default=1.0, help="per direction")
    args = parser.parse_args()
    if not 0 <= args.delay_ms <= 1000:
        parser.error("--delay-ms must be in [0, 1000]")
    target = urlsplit(args.upstream)
    if target.hostname is None or target.port is None:
        parser.error("--upstream: want http://HOST:PORT")
    host, _, port = args.listen.rpartition(":")
    asyncio.run(relay((target.hostname, target.port), (host, int(port)), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
