"""`piigate serve --workers N`: N gateway processes sharing one port.

Python runs one request at a time per process, so throughput beyond one core needs
processes. Each worker is a full gateway (its own key caches, verified-token cache,
coalescer and audit trail `PATH.<i>`); the kernel spreads *connections* across them with
SO_REUSEPORT, which is on only in this mode. Per-process caches are fine: each is
bounded, each fetches an issuer's keys once per TTL, and N small duplications cost less
than any shared state between processes would.

The supervisor reserves the port first (a bound, non-listening SO_REUSEPORT socket, so
port 0 resolves to one port for everyone), starts the workers, prints `listening on
HOST:PORT` once all of them listen, forwards SIGTERM/SIGINT so each drains its calls, and
exits 0 when they all did; if a worker dies early, the others are stopped and it exits 1.
SIGHUP is passed on to every worker (each reloads its secret and TLS files), once they
all listen.

With `server.metrics_listen`, the supervisor is the one scrape target for all workers
(`piigate.telemetry.metrics`, rule 6): it creates a fresh `PROMETHEUS_MULTIPROC_DIR`
(under the system's temporary directory) before the workers start, passes it to them,
serves `/metrics` and `/healthz` over it from a thread of its own (printing `metrics on
URL` after the listening line), drops each dead worker's live gauges, and removes the
directory when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from aiohttp import web

from piigate.telemetry.endpoint import WorkerMetrics, metrics_app
from piigate.telemetry.metrics import MULTIPROC_ENV
from piigate.transport.addresses import AddressInUse, ListenAddress
from piigate.transport.http import start_http_app

START_TIMEOUT_S = 30.0


def reserve_port(listen: ListenAddress) -> socket.socket:
    """A bound (never listening) socket that fixes the port the workers will share."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    return sock


def supervise(config: Path, listen: ListenAddress, workers: int, extra: Sequence[str],
              metrics_listen: ListenAddress | None = None) -> int:
    """Run `workers` gateway processes on `listen` until SIGTERM/SIGINT, serving all
    their metrics on `metrics_listen`."""
    with contextlib.ExitStack() as held:
        reserved = held.enter_context(reserve_port(listen))
        port = reserved.getsockname()[1]
        address = str(ListenAddress(listen.host, port))
        env, passed, served, endpoint = None, list(extra), None, None
        if metrics_listen is not None:
            directory = Path(held.enter_context(
                tempfile.TemporaryDirectory(prefix="piigate-metrics-")))
            served = WorkerMetrics(directory, workers)
            try:
                endpoint = held.enter_context(MetricsEndpoint(
                    metrics_app(served.exposition, served.readiness), metrics_listen))
            except AddressInUse as exc:
                print(f"cannot listen on {exc}: the address is in use", file=sys.stderr)
                return 2
            env = {**os.environ, MULTIPROC_ENV: str(directory)}
            passed += ["--metrics-dir", str(directory)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "piigate", "serve", "--config", str(config),
                 "--listen", address, "--worker-index", str(i), *passed],
                stdout=subprocess.PIPE, text=True, env=env,
            )
            for i in range(workers)
        ]
        stop, hangup = threading.Event(), threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: hangup.set())
        try:
            if not _all_listening(procs):
                print("a worker did not start", file=sys.stderr)
                return 1
            print(f"listening on {address} ({workers} workers)", flush=True)
            if endpoint is not None:
                print(f"metrics on {endpoint.url}", flush=True)
            while not stop.is_set():
                if any(p.poll() is not None for p in procs):
                    print("a worker exited; stopping the others", file=sys.stderr)
                    return 1
                if hangup.is_set():  # once every worker listens, so none dies of it
                    hangup.clear()
                    for p in procs:
                        p.send_signal(signal.SIGHUP)
                stop.wait(0.5)
            return 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 60
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                if p.poll() is None:
                    p.kill()
                    p.wait()
                if served is not None:
                    served.worker_exited(p.pid)


class MetricsEndpoint:
    """The supervisor's `/metrics` and `/healthz`: an aiohttp app on an event loop in a
    thread of its own (the supervisor's main thread waits on its workers)."""

    def __init__(self, app: web.Application, listen: ListenAddress) -> None:
        self._app = app
        self._listen = listen
        self.url = ""
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),),
                                        name="piigate-metrics", daemon=True)

    def __enter__(self) -> MetricsEndpoint:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_S) or self._failed is not None:
            self._thread.join(START_TIMEOUT_S)
            raise AddressInUse(str(self._listen)) from self._failed
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            runner, self.url = await start_http_app(self._app, self._listen)
        except OSError as exc:
            self._failed = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


def _all_listening(procs: Sequence[subprocess.Popen[str]]) -> bool:
    ready: list[bool] = []

    def read(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        ready.append(line.startswith("listening on "))
        for _ in proc.stdout:  # keep draining so a chatty worker never blocks on its pipe
            pass

    for proc in procs:
        threading.Thread(target=read, args=(proc,), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(ready) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(ready) == len(procs) and all(ready)


def cpu_count() -> int:
    """Cores this process may run on (respects CPU affinity)."""
    return len(os.sched_getaffinity(0))
