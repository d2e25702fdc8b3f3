"""Where a server's time goes: py-spy (and perf) samples under load, summarized as text.

`PySpy.record` samples a running process's stacks (`py-spy record --format raw`,
collapsed stacks: `frame;frame;...;leaf COUNT`, each frame `function (file:line)`).
py-spy pauses the process for each sample, so profiling runs are never the measured
ones. Two modes:

- Python stacks (the default, `summarize`): idle threads (the event loop waiting in
  epoll) are mostly not sampled, so the shares are of the time the process spent running
  Python code, including the C code that code called.
- Native (`PySpy(native=True)`): py-spy `--native --idle --threads` for the first half of
  the window (every Python thread's C frames and OS thread id), then perf's cpu-clock
  (`Perf`: every thread, the kernel included, nothing stopped) for the second, each half
  with every thread's CPU from /proc (`thread_cpu`) and the calls answered in it
  (`LineCount` on piigate's audit trail). `bench.profile_native` summarizes them.

`python -m bench.profile RAW` summarizes a saved recording again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE_HZ = 200
# py-spy stops every thread and reads each per sample, so its pause grows with the
# threads (natively at 64 in flight, 73 threads at 200 Hz left the gateway 132 calls in
# 4 s): the rate is cut to keep this many thread-samples a second (and at least 20 Hz).
THREAD_SAMPLES_PER_S = 2800
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
# Frames that sit under every sample and say nothing about where the time goes.
SCAFFOLDING = frozenset({
    "<module>", "main", "run", "run_forever", "run_until_complete", "_run_once", "_run",
    "_run_module_as_main", "_run_code",
})  # fmt: skip


Stacks = list[tuple[list[str], int]]
ThreadCpu = dict[int, tuple[str, float]]  # OS thread id -> (its name, CPU seconds)
PerfSamples = Counter[tuple[int, str, str, str]]  # (thread id, name, symbol, library) -> n
PERF_HZ = 999


@dataclass
class Recording:
    """A py-spy run in progress; `wait` returns its collapsed stacks.

    Native: py-spy samples the first half of the window and perf (`Perf`) the second, each
    with the CPU of every thread over its own half (`thread_cpu`); both are written beside
    `output` (`.threads.json`, `.perf.tsv`) for `python -m bench.profile`."""

    process: subprocess.Popen[bytes]
    output: Path
    timeout_s: float
    pid: int = 0
    native: bool = False
    notes: list[str] = field(default_factory=list)  # where py-spy ran, its sample count, lag
    rate_hz: int = RATE_HZ
    spy: Phase = field(default_factory=lambda: Phase())  # CPU and calls while py-spy sampled
    perf: PerfSamples = field(default_factory=Counter)
    perf_phase: Phase = field(default_factory=lambda: Phase())  # ... while perf sampled
    _stderr: bytes = b""
    _phases: threading.Thread | None = None
    _perf: Perf | None = None

    def start_phases(self, perf: Perf | None, perf_s: float, calls: Callable[[], int] | None
                     ) -> None:  # fmt: skip
        count = calls or (lambda: -1)
        start = (thread_cpu(self.pid), count())
        self._phases = threading.Thread(target=self._run_phases,
                                        args=(start, perf, perf_s, count), daemon=True)  # fmt: skip
        self._phases.start()

    def _run_phases(self, start: tuple[ThreadCpu, int], perf: Perf | None, perf_s: float,
                    count: Callable[[], int]) -> None:  # fmt: skip
        self._stderr = self._communicate()
        self.spy = Phase.between(start, (thread_cpu(self.pid), count()), self.rate_hz)
        self._perf = perf
        if perf is None or perf_s <= 0:
            return
        mark = (thread_cpu(self.pid), count())
        if perf.record(self.pid, perf_s, self.output.with_suffix(".perf.data")):
            self.perf_phase = Phase.between(mark, (thread_cpu(self.pid), count()))
        else:
            self.notes.append("perf record failed: where the CPU runs is py-spy's alone")

    def _communicate(self) -> bytes:
        try:
            _, stderr = self.process.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return stderr

    def wait(self) -> Stacks:
        if self._phases is None:
            self._stderr = self._communicate()
        else:
            self._phases.join(self.timeout_s * 2)
            self._save_native()
        text = self._stderr.decode(errors="replace")
        self.notes += [line.removeprefix("py-spy> ").strip() for line in text.splitlines()
                       if "Samples:" in line or "behind" in line]  # fmt: skip
        if not self.output.exists():
            raise RuntimeError(f"py-spy failed: {text[-500:]}")
        return parse_collapsed(self.output.read_text())

    def _save_native(self) -> None:
        phases = {"py-spy": self.spy, "perf": self.perf_phase}
        self.output.with_suffix(".threads.json").write_text(json.dumps({
            name: {"calls": phase.calls, "rate_hz": phase.rate_hz,
                   "threads": {str(t): v for t, v in phase.threads.items()}}
            for name, phase in phases.items()
        }))  # fmt: skip
        data = self.output.with_suffix(".perf.data")
        if self._perf is not None and self.perf_phase.threads and data.exists():
            self.perf = self._perf.read(data, self.pid)
            self.output.with_suffix(".perf.tsv").write_text(write_perf(self.perf))

    def summarize(self, stacks: Stacks, cpu_us_per_call: float | None = None) -> list[str]:
        """The summary for this recording's mode (`summarize` or `summarize_native`)."""
        if not self.native:
            return [*self.notes, *summarize(stacks, rate_hz=self.rate_hz)]
        from bench.profile_native import summarize_native  # it imports this module

        return [*self.notes, *summarize_native(stacks, self.spy, self.perf, self.perf_phase,
                                               cpu_us_per_call)]  # fmt: skip


@dataclass(frozen=True)
class Phase:
    """One tool's part of the window: each thread's CPU, and the calls answered (None:
    not counted)."""

    threads: ThreadCpu = field(default_factory=dict)
    calls: int | None = None

    rate_hz: int = RATE_HZ  # py-spy's, for its part

    @classmethod
    def between(cls, start: tuple[ThreadCpu, int], end: tuple[ThreadCpu, int],
                rate_hz: int = RATE_HZ) -> Phase:  # fmt: skip
        calls = end[1] - start[1] if start[1] >= 0 and end[1] >= 0 else None
        return cls(cpu_between(start[0], end[0]), calls, rate_hz)

    @property
    def cpu_s(self) -> float:
        return sum(cpu for _, cpu in self.threads.values())

    def per_call_us(self) -> float | None:
        return self.cpu_s / self.calls * 1e6 if self.calls else None


class LineCount:
    """Lines appended to a file since this was made (a log with a line per call: the calls
    answered), read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.lines = 0

    def __call__(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as log:
                log.seek(self.offset)
                data = log.read()
            self.offset += len(data)
            self.lines += data.count(b"\n")
        return self.lines


@dataclass(frozen=True)
class PySpy:
    binary: str
    native: bool = False

    @classmethod
    def find(cls, native: bool = False) -> PySpy | None:
        """py-spy next to this Python (the venv), else on PATH."""
        beside = Path(sys.executable).parent / "py-spy"
        found = str(beside) if beside.exists() else shutil.which("py-spy")
        return cls(found, native) if found else None

    def record(self, pid: int, duration_s: float, output: Path,
               calls: Callable[[], int] | None = None) -> Recording:  # fmt: skip
        """Sample `pid` for `duration_s` (native: py-spy the first half, perf the rest;
        `calls` counts the calls answered so far, for each part's CPU per call)."""
        output.parent.mkdir(parents=True, exist_ok=True)
        perf = Perf.find() if self.native else None
        spy_s = math.ceil(duration_s / 2) if perf and duration_s >= 2 else math.ceil(duration_s)
        rate = native_rate(len(thread_cpu(pid)))
        argv = [self.binary, "record", "--pid", str(pid), "--duration", str(spy_s),
                "--rate", str(rate), "--format", "raw", "--output", str(output)]  # fmt: skip
        if self.native:
            argv += ["--native", "--idle", "--threads"]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Before py-spy has attached (it reads symbols first), so its threads inherit it.
        placed = sample_in_place(process.pid, pid)
        where = "real-time on the server's CPUs" if placed else (
            "on any CPU (real-time refused): each syscall soaks up the µs before it")  # fmt: skip
        recording = Recording(process, output, duration_s + 30, pid, self.native,
                              [f"py-spy {where}, {rate} Hz"], rate)  # fmt: skip
        if self.native:
            recording.notes.append(
                f"py-spy --native the first {spy_s} s, perf cpu-clock ({PERF_HZ} Hz) the last "
                f"{max(duration_s - spy_s, 0):.1f} s" if perf else "perf not found: py-spy only")
            recording.start_phases(perf, duration_s - spy_s, calls)
        return recording


@dataclass(frozen=True)
class Perf:
    """`perf record -e cpu-clock` on the CPUs a process runs on, its samples kept: every
    thread's CPU, kernel and user, sampled by each CPU's timer, so nothing is stopped and
    no point is favoured (py-spy's stops favour system calls and waits: `sample_in_place`).
    Per CPU, not per process (`-p`): a per-process event is switched at every context
    switch, which here cost the gateway 60 % more CPU per call, all of it in the scheduler
    lines. No call stacks (CPython 3.11 has no perf frames): where the CPU runs, not what
    for."""

    binary: str

    @classmethod
    def find(cls) -> Perf | None:
        found = shutil.which("perf")
        return cls(found) if found else None

    def record(self, pid: int, duration_s: float, data: Path) -> bool:
        try:
            cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(pid)))
        except (AttributeError, OSError):
            return False
        argv = [self.binary, "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-a", "-C",
                cpus, "-o", str(data), "--", "sleep", f"{duration_s:.2f}"]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, timeout=duration_s + 30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and data.exists()

    def read(self, data: Path, pid: int) -> PerfSamples:
        """`perf script`'s samples of process `pid` in a recording, by thread and symbol."""
        try:
            done = subprocess.run(
                [self.binary, "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym,dso"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return Counter()
        return parse_perf_script(done.stdout, pid)


_PERF_LINE = re.compile(r"^\s*(?P<comm>.*?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+(?P<ip>[0-9a-f]+)"
                        r"\s+(?P<sym>.*?)\s*\((?P<dso>[^()]*)\)\s*$")  # fmt: skip


def parse_perf_script(text: str, pid: int) -> PerfSamples:
    """`comm pid/tid ip symbol (library)` lines of process `pid` → counts per (tid, comm,
    symbol, library)."""
    out: PerfSamples = Counter()
    for line in text.splitlines():
        match = _PERF_LINE.match(line)
        if match and int(match["pid"]) == pid:
            dso = match["dso"]
            library = dso if dso.startswith("[") else Path(dso).name
            if "site-packages/" in dso:  # keep the package: uvloop/loop..., grpc/_cython/...
                library = dso.split("site-packages/", 1)[1]
            out[(int(match["tid"]), match["comm"], match["sym"] or "[unknown]", library)] += 1
    return out


def write_perf(samples: PerfSamples) -> str:
    return "".join(f"{n}\t{tid}\t{comm}\t{sym}\t{dso}\n"
                   for (tid, comm, sym, dso), n in samples.most_common())  # fmt: skip


def read_perf(text: str) -> PerfSamples:
    out: PerfSamples = Counter()
    for line in text.splitlines():
        n, tid, comm, sym, dso = line.split("\t")
        out[(int(tid), comm, sym, dso)] += int(n)
    return out


def native_rate(threads: int) -> int:
    """py-spy's rate for a process with `threads` threads (named for the native mode,
    where it matters most)."""
    return max(20, min(RATE_HZ, THREAD_SAMPLES_PER_S // max(threads, 1)))


def sample_in_place(spy: int, target: int) -> bool:
    """Make py-spy a real-time process on the CPUs of the process it samples; False (and
    nothing changed) when the system refuses (not root).

    py-spy stops the process for each sample (ptrace), thread by thread. From another CPU
    the stop lands late, at the target's next system call, so every syscall soaks up the
    µs of work before it (measured here: a getpid taking 0.14 % of a loop got 3.3 % of the
    samples; in a lock ping-pong almost every sample). Real-time on the same CPU it
    preempts the target at once, so the first thread it stops (the main thread: the event
    loop) is caught where it was (the getpid: 0.3 %); the threads it stops after may run on
    into a wait meanwhile, which is why each thread's CPU comes from /proc and perf."""
    try:
        os.sched_setscheduler(spy, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    with contextlib.suppress(OSError):  # the target already gone: py-spy will say so
        os.sched_setaffinity(spy, os.sched_getaffinity(target))
    return True


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
    parts = Path(file).with_suffix("").parts if file.strip(".") else ()
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
    ("Event.wait", "threading.py"), ("Handed.wait", "piigate/transport/bridge.py"),
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


def summarize(stacks: list[tuple[list[str], int]], top: int = 12, rate_hz: int = RATE_HZ
              ) -> list[str]:  # fmt: skip
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
                function.rpartition(".")[2] not in SCAFFOLDING
            ):
                seen.add(f"{function} ({file})")
        for label in seen:
            own[label] += count
    lines = [f"{total} samples at {rate_hz} Hz (running, not idle), by thread:"]
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


def thread_cpu(pid: int) -> ThreadCpu:
    """Each thread of `pid`: its name and CPU seconds so far (schedstat's nanoseconds,
    else stat's clock ticks); {} off Linux or once the process is gone."""
    out: ThreadCpu = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            name = (task / "comm").read_text().strip()
            try:
                cpu = int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue  # the thread ended while being read
        out[int(task.name)] = (name, cpu)
    return out


def cpu_between(before: ThreadCpu, after: ThreadCpu) -> ThreadCpu:
    """CPU per thread between two snapshots; a thread born in between counts from zero
    (one that ended in between is lost: its CPU is not in the process's either)."""
    return {tid: (name, max(cpu - before.get(tid, (name, 0.0))[1], 0.0))
            for tid, (name, cpu) in after.items()}  # fmt: skip


def _saved_phase(saved: dict[str, Any]) -> Phase:
    threads = saved.get("threads", {})
    return Phase({int(t): (name, float(cpu)) for t, (name, cpu) in threads.items()},
                 saved.get("calls"), saved.get("rate_hz", RATE_HZ))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.profile RAW [--cpu-us-per-call N]`: summarize a saved recording
    again (the raw file `--profile` wrote, with its `.threads.json` and `.perf.tsv`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=main.__doc__)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--cpu-us-per-call", type=float)
    args = parser.parse_args(argv)
    from bench.profile_native import THREAD_ROOT, summarize_native  # it imports this module

    stacks = parse_collapsed(args.raw.read_text())
    if not any(THREAD_ROOT.match(frames[0]) for frames, _ in stacks[:1]):
        print("\n".join(summarize(stacks)))
        return 0
    cpu_file, perf_file = args.raw.with_suffix(".threads.json"), args.raw.with_suffix(".perf.tsv")
    saved = json.loads(cpu_file.read_text()) if cpu_file.exists() else {}
    spy, perf_phase = (_saved_phase(saved.get(k, {})) for k in ("py-spy", "perf"))
    perf = read_perf(perf_file.read_text()) if perf_file.exists() else None
    print("\n".join(summarize_native(stacks, spy, perf, perf_phase, args.cpu_us_per_call)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
