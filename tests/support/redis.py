"""Test helper: a real `redis-server` of the test's own, and stores that misbehave.

    with running_redis(tmp_path) as store:     # 127.0.0.1, a free port, tmp_path/redis
        config["state"]["url"] = store.url
        store.stop(); ...; store.start()       # an outage, and the store's return

The server is Debian's `redis-server` (`make redis-server` installs it), bound to loopback
only, with its data directory under the test's temporary directory and no persistence
(`persist=True`: an append-only file, fsynced on every write, for restart survival).
`DEBUG SLEEP` is enabled for local connections so a test can make the store slow.
Every wait is bounded; the server is stopped on exit whatever happened.

`running_bad_store(mode)` is a TCP server on 127.0.0.1:0 that speaks no Redis: it
answers garbage (`"garbage"`) or accepts and never answers (`"silent"`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 5


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError("redis-server is not installed: run `make redis-server`")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, restartable on the same port."""

    directory: Path
    password: str | None = None
    persist: bool = False
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain synchronous client, for the test to look at the store."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=5, socket_connect_timeout=5)

    def start(self) -> None:
        """Start (or restart on the same port); choose a free port the first time."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(PORT_ATTEMPTS):
            if not self.port:
                self.port = _free_port()
            if self._launch():
                return
            if self.persist:
                break  # the data lives with this port's server: do not move
            self.port = 0
        raise RuntimeError(f"redis-server did not start; see {self.directory}/redis.log")

    def _launch(self) -> bool:
        args = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning",
            "--enable-debug-command", "local", "--save", "",
            "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = self.client()
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    return False  # e.g. the port was taken meanwhile
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return True
                time.sleep(0.02)
        finally:
            client.close()
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bound); a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def sleep(self, seconds: float) -> None:
        """Block the whole server for `seconds` (DEBUG SLEEP): a slow store."""
        client = self.client()
        try:
            client.execute_command("DEBUG", "SLEEP", str(seconds))
        finally:
            client.close()


@contextlib.contextmanager
def running_redis(directory: Path, *, password: str | None = None,
                  persist: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(directory / "redis", password=password, persist=persist)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class BadStore:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@asynccontextmanager
async def running_bad_store(mode: Literal["garbage", "silent"]) -> AsyncIterator[BadStore]:
    connections: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(30):
                    while await reader.read(4096):
                        if mode == "garbage":
                            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                            await writer.drain()
        finally:
            connections.discard(task)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield BadStore(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await server.wait_closed()
