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
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from piigate.transport.addresses import ListenAddress

START_TIMEOUT_S = 30.0


def reserve_port(listen: ListenAddress) -> socket.socket:
    """A bound (never listening) socket that fixes the port the workers will share."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((listen.host, listen.port))
    return sock


def supervise(config: Path, listen: ListenAddress, workers: int, extra: Sequence[str]) -> int:
    """Run `workers` gateway processes on `listen` until SIGTERM/SIGINT."""
    with reserve_port(listen) as reserved:
        port = reserved.getsockname()[1]
        address = str(ListenAddress(listen.host, port))
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "piigate", "serve", "--config", str(config),
                 "--listen", address, "--worker-index", str(i), *extra],
                stdout=subprocess.PIPE, text=True,
            )
            for i in range(workers)
        ]
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            if not _all_listening(procs):
                print("a worker did not start", file=sys.stderr)
                return 1
            print(f"listening on {address} ({workers} workers)", flush=True)
            while not stop.is_set():
                if any(p.poll() is not None for p in procs):
                    print("a worker exited; stopping the others", file=sys.stderr)
                    return 1
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
