"""Load generators, each in its own process(es), and what they report.

Two generators give the same shape of load (C connections, N calls in flight split over
them, a warm-up, then a measured phase bounded by duration AND call count):

- `h2client` (default): `python -m bench.h2client`, gRPC over raw HTTP/2 with precomputed
  frames (`bench.h2wire`). Every call carries the subject token and caller credential the
  workload planned for it (`bench.traffic`), at a few tens of µs of CPU per call.
- `h2load` (`--load h2load`, Debian `nghttp2-client`): the cheapest generator, but one
  h2load process sends one body file (`-d`) with fixed headers (`-H`) on every call, so
  here each connection is its own h2load process with its own token and credential:
  exactly C distinct subject tokens per run. A gateway that caches verified tokens then
  verifies almost nothing, which is not what production sees. h2load also sees only the
  HTTP status (gRPC errors are 200 + `grpc-status` trailers), so errors are taken from the
  servers' own records in this mode. (Batch rows always use `h2client`.)

The direct-vault rows use a third, `python -m bench.vault_direct` (HTTP/1.1 to the vault,
piigate's own request), driven by the same `run_generator`.

Why not a grpc.aio client: it spends 80-93 % of a core at 16+ calls in flight
(performance-baseline.md); on two cores it competes with what it measures.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

from bench import h2wire
from bench.traffic import percentile
from piigate_client.v1 import detokenization_pb2 as pb

PATH = "/piigate.v1.DetokenizationService/Detokenize"
BATCH_PATH = "/piigate.v1.DetokenizationService/BatchDetokenize"
CONNECT_TIMEOUT_S = 5.0
DRAIN_S = 5.0  # after the measured phase, in-flight calls get this long, then are errors


@dataclass
class LoadSpec:
    """Everything one generator run needs, written as JSON for the generator process."""

    target: str  # 127.0.0.1:PORT
    per_connection: list[int]  # calls in flight on each connection
    duration_s: float
    warmup_s: float
    callers: dict[str, str]  # caller id -> its bearer token
    tokens: list[tuple[str, str]]  # (caller id, subject token)
    warmup: list[int]  # token indexes cycled during warm-up
    sequence: list[int]  # token index of each measured call; its length is the call cap
    loop: str = "asyncio"  # the generator's own event loop
    # 0: Detokenize, one token per call. N >= 1: BatchDetokenize of N tokens per call; the
    # indexes in `warmup` and `sequence` then name groups, group g being tokens[g*N:(g+1)*N]
    # (one caller per group).
    batch: int = 0

    def calls(self) -> list[tuple[str, bytes]]:
        """(caller id, length-prefixed request message) per call index."""
        if not self.batch:
            return [(caller, grpc_body(token)) for caller, token in self.tokens]
        n = self.batch
        groups = [self.tokens[g : g + n] for g in range(0, len(self.tokens) - n + 1, n)]
        return [(group[0][0], grpc_batch_body([t for _, t in group])) for group in groups]

    @property
    def path(self) -> str:
        return BATCH_PATH if self.batch else PATH

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> LoadSpec:
        data = json.loads(path.read_text())
        data["tokens"] = [tuple(t) for t in data["tokens"]]
        return cls(**data)


@dataclass
class LoadResult:
    """What a generator measured in the measured phase."""

    calls: int  # completed (OK or not)
    ok: int
    errors: int  # non-OK gRPC status, reset streams, broken connections, drain timeouts
    elapsed_s: float
    sent: int  # how many of the planned sequence were sent (for the achieved repeat share)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_s: float
    errors_seen_by_generator: bool = True  # False for h2load (HTTP status only)
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Latencies(NamedTuple):
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def summarize(latencies_s: list[float]) -> Latencies:
    """Percentiles in milliseconds (NaN without calls)."""
    ordered = sorted(latencies_s)
    return Latencies(*(percentile(ordered, q) * 1000 for q in (50, 90, 99, 100)))


# --- driving a generator from the benchmark --------------------------------------------------
class Spec(Protocol):
    duration_s: float
    warmup_s: float

    def save(self, path: Path) -> None: ...


def run_generator(
    spec: Spec, work: Path, on_measuring: Callable[[], None], cpu: int | None,
    module: str = "bench.h2client",
) -> LoadResult:  # fmt: skip
    """Run `python -m MODULE SPEC.json` (the gRPC generator, or `bench.vault_direct`'s HTTP
    one) in its own process (pinned to `cpu`); call `on_measuring` when its measured phase
    starts. Bounded: the process is killed past its time."""
    from bench.stack import child_env, pin

    path = work / "load-spec.json"
    spec.save(path)
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(path)],
        stdout=subprocess.PIPE, stderr=(work / "load.stderr").open("wb"), text=True,
        env=child_env(),
    )  # fmt: skip
    pin(process.pid, cpu)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=read, daemon=True).start()
    limit = time.monotonic() + 2 * CONNECT_TIMEOUT_S + spec.warmup_s + spec.duration_s + DRAIN_S
    result: LoadResult | None = None
    try:
        while result is None:
            line = lines.get(timeout=max(0.1, limit + 10 - time.monotonic()))
            if line == "":
                break
            if line.strip() == "measuring":
                on_measuring()
            elif line.startswith("{"):
                result = LoadResult(**json.loads(line))
    except queue.Empty:
        pass
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    if result is None:
        detail = (work / "load.stderr").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the load generator failed:\n{detail}")
    return result


_H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_H2LOAD_RATE = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")


def h2load_path() -> str | None:
    return shutil.which("h2load")


def run_h2load(
    spec: LoadSpec, work: Path, on_measuring: Callable[[], None], cpu: int | None
) -> LoadResult:
    """The same load shape with h2load: one process per connection, each with its own
    subject token and caller credential (the first planned tokens), `-m` its share of the
    calls in flight. Bounded by `-D` and a hard kill; `-n` is ignored by h2load with `-D`,
    so the call cap is enforced as a per-connection `--rps` ceiling."""
    from bench.stack import pin

    binary = h2load_path()
    if binary is None:
        raise RuntimeError("h2load not found (apt-get install nghttp2-client)")
    runs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    cap_rps = max(1, math.ceil(len(spec.sequence) / spec.duration_s / len(spec.per_connection)))
    for i, slots in enumerate(spec.per_connection):
        caller, token = spec.tokens[spec.sequence[i % len(spec.sequence)]]
        body = work / f"h2load-body-{i}.bin"
        body.write_bytes(grpc_body(token))
        log, out = work / f"h2load-{i}.log", work / f"h2load-{i}.out"
        log.unlink(missing_ok=True)  # h2load appends to its log file
        argv = [
            binary, "-c", "1", "-m", str(slots), "-D", _ms(spec.duration_s),
            "--warm-up-time", _ms(spec.warmup_s), "--rps", str(cap_rps),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", f"authorization: Bearer {spec.callers[caller]}",
            "-d", str(body), "--log-file", str(log), f"http://{spec.target}{PATH}",
        ]  # fmt: skip
        with out.open("wb") as stdout:
            process = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT)
        pin(process.pid, cpu)
        runs.append((process, log, out))
    time.sleep(spec.warmup_s)
    on_measuring()
    deadline = time.monotonic() + spec.duration_s + DRAIN_S + 10
    done = succeeded = 0
    rate = cpu_s = 0.0
    latencies: list[float] = []
    for process, log, out in runs:
        cpu_s += _wait_for_cpu(process, deadline)
        output = out.read_text(errors="replace")
        if match := _H2LOAD_DONE.search(output):
            done += int(match.group(3))
            succeeded += int(match.group(4))
        if match := _H2LOAD_RATE.search(output):
            rate += float(match.group(1))
        if log.exists():
            rows = (row.split("\t") for row in log.read_text().splitlines())
            latencies += [int(cols[2]) / 1e6 for cols in rows if len(cols) >= 3]
    return LoadResult(
        calls=done, ok=succeeded, errors=done - succeeded,
        elapsed_s=done / rate if rate else spec.duration_s,
        sent=len(spec.per_connection), generator_cpu_s=cpu_s, errors_seen_by_generator=False,
        notes=[f"h2load: {len(spec.per_connection)} distinct tokens; sees HTTP status only"],
        **summarize(latencies)._asdict(),
    )  # fmt: skip


def _ms(seconds: float) -> str:
    """An h2load duration: an integer with a unit (it refuses `0.5`)."""
    return f"{max(1, round(seconds * 1000))}ms"


def grpc_body(token: str) -> bytes:
    """The length-prefixed DetokenizeRequest for `token`."""
    return h2wire.grpc_message(pb.DetokenizeRequest(subject_token=token).SerializeToString())


def grpc_batch_body(tokens: list[str]) -> bytes:
    """The length-prefixed BatchDetokenizeRequest for `tokens`."""
    request = pb.BatchDetokenizeRequest(subject_tokens=tokens)
    return h2wire.grpc_message(request.SerializeToString())


def _wait_for_cpu(process: subprocess.Popen[bytes], deadline: float) -> float:
    """Reap `process` (killing it past `deadline`) and return its CPU seconds, which only
    wait4's resource usage still knows once it has exited."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            process.kill()
            deadline = math.inf
        time.sleep(0.05)
