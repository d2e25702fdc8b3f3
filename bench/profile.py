"""Where a server's time goes: py-spy samples under load, summarized as text.

`PySpy.record` samples a running process's Python stacks (`py-spy record --format raw`,
collapsed stacks: `frame;frame;...;leaf COUNT`, each frame `function (file:line)`).
py-spy pauses the process briefly for each sample, so profiling runs are never the
measured ones. Idle threads (the event loop waiting in epoll) are not sampled, so the
shares are of the time the process spent running Python code, including the C code that
code called; grpc's own C threads are invisible without `--native`.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 200
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
# Frames that sit under every sample and say nothing about where the time goes.
_SCAFFOLDING = frozenset({
    "<module>", "main", "run", "run_forever", "run_until_complete", "_run_once", "_run",
    "_run_module_as_main", "_run_code",
})  # fmt: skip


@dataclass
class Recording:
    """A py-spy run in progress; `wait` returns its collapsed stacks."""

    process: subprocess.Popen[bytes]
    output: Path
    timeout_s: float

    def wait(self) -> list[tuple[list[str], int]]:
        try:
            _, stderr = self.process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        if not self.output.exists():
            raise RuntimeError(f"py-spy failed: {stderr.decode(errors='replace')[-500:]}")
        return parse_collapsed(self.output.read_text())


@dataclass(frozen=True)
class PySpy:
    binary: str

    @classmethod
    def find(cls) -> PySpy | None:
        """py-spy next to this Python (the venv), else on PATH."""
        beside = Path(sys.executable).parent / "py-spy"
        found = str(beside) if beside.exists() else shutil.which("py-spy")
        return cls(found) if found else None

    def record(self, pid: int, duration_s: float, output: Path) -> Recording:
        output.parent.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "record", "--pid", str(pid), "--duration", str(math.ceil(duration_s)),
                "--rate", str(RATE_HZ), "--format", "raw", "--output", str(output)]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return Recording(process, output, duration_s + 30)


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """`a;b;c 12` lines → ([a, b, c], 12)."""
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def frame_name(frame: str) -> tuple[str, str]:
    """(function, file) of a py-spy frame, line number dropped."""
    match = _FRAME.match(frame)
    return (match["function"], match["file"]) if match else (frame, "")


def area(file: str) -> str:
    """A frame's file as a reader thinks of it: `piigate/tokens/verification.py` →
    piigate.tokens.verification, `aiohttp/client.py` → aiohttp, `asyncio/events.py` →
    asyncio."""
    parts = Path(file).with_suffix("").parts
    if not parts:
        return "?"
    if parts[0] in ("piigate", "piigate_client", "piigate_dev", "bench"):
        return ".".join(parts[:3])
    return parts[0]


def _top(counter: Counter[str], total: int, n: int) -> Iterable[str]:
    for label, count in counter.most_common(n):
        yield f"  {count / total:6.1%}  {label}"


# Leaves where a thread only waits, blocked in C with the GIL released, which py-spy
# still samples as running: a thread-pool worker waiting for a call, a handler thread
# waiting for the event loop's answer.
_WAITS = frozenset({
    ("_worker", "concurrent/futures/thread.py"), ("Condition.wait", "threading.py"),
    ("Event.wait", "threading.py"),
})  # fmt: skip


def _thread(frames: list[str]) -> str:
    names = [frame_name(f) for f in frames]
    if ("_worker", "concurrent/futures/thread.py") in names:
        if names[-1] in _WAITS:
            return "handler threads, waiting (GIL released; not CPU)"
        return "handler threads (thread-pool server)"
    if any(function == "_serve" and file.endswith("grpc/_server.py") for function, file in names):
        # grpc's thread-pool server polls its completion queue from Python into C: its
        # grpc-core work (HTTP/2, the transport) and its idle waits both show as `_serve`.
        return "grpc server thread (completion queue: grpc core, C; work and waits)"
    if any(function.endswith("Thread._bootstrap") for function, _ in names):
        # grpc.aio polls its completion queue on a Python thread running Cython code, so
        # that thread's grpc-core work shows as `Thread.run` self time.
        return "other threads (grpc.aio completion-queue poller: grpc core, C)"
    return "main thread (event loop, handlers)"


def summarize(stacks: list[tuple[list[str], int]], top: int = 12) -> list[str]:
    """Shares of samples by thread, self time by area and function, and inclusive time of
    the server's own functions (`piigate.*`, `bench.*`: the stages of a request)."""
    total = sum(count for _, count in stacks)
    if not total:
        return ["no samples"]
    threads: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    own: Counter[str] = Counter()
    waiting = 0
    for frames, count in stacks:
        thread = _thread(frames)
        threads[thread] += count
        if "waiting" in thread:
            waiting += count
            continue  # not CPU: kept out of the areas and functions below
        function, file = frame_name(frames[-1])
        by_area[area(file)] += count
        self_time[f"{function} ({file})"] += count
        seen = set()
        for frame in frames:
            function, file = frame_name(frame)
            if area(file).startswith(("piigate.", "bench.")) and (
                function.rpartition(".")[2] not in _SCAFFOLDING
            ):
                seen.add(f"{function} ({file})")
        for label in seen:
            own[label] += count
    lines = [f"{total} samples at {RATE_HZ} Hz (running, not idle), by thread:"]
    lines += _top(threads, total, 5)
    busy = total - waiting
    if not busy:
        return lines
    if waiting:
        lines.append(f"below: the {busy} samples that were not waiting")
    lines.append("self time by area (module of the innermost Python frame):")
    lines += _top(by_area, busy, top)
    lines.append("self time by function:")
    lines += _top(self_time, busy, top)
    lines.append("inclusive time of the server's own functions:")
    lines += _top(own, busy, top + 8)
    return lines
