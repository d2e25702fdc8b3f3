"""Native py-spy stacks and perf samples of a server, summarized: where its CPU runs, what
it is for, and how its threads wait (`summarize_native`; recorded by `bench.profile`).

py-spy's `--native --idle --threads` stacks carry every Python thread's C frames
(`function (library.so)`, `function (file.c:line)` or an unresolved `0x... (library.so)`)
and its OS thread id. A sample whose innermost frames show the thread not running user
code (epoll, a lock, the GIL's condition variable, a system call: `wait_kind`) is never
CPU; the others share their thread's CPU from /proc. perf's samples (no stacks) say where
each thread group's CPU ran, the kernel included, without py-spy's biases
(`bench.profile.sample_in_place`): they split each group into kernel and user time, and
with them each group's CPU is the unperturbed part's. grpc's own C threads (EventEngine,
timers) have no Python state: py-spy never samples them, /proc and perf do.

Where the CPU runs (`mechanism`, `perf_mechanism`: the innermost frame's library) and what
it is for (`purpose`: the innermost library below piigate's innermost frame) are two
partitions of the same CPU; the rules are the tables below, tried in order. Hand-written
because no py-spy or perf summary tells grpc's C, the GIL, the kernel's thread switches
and the pipeline's stages apart.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.profile import (
    RATE_HZ,
    SCAFFOLDING,
    PerfSamples,
    Phase,
    Stacks,
    ThreadCpu,
    area,
    frame_name,
)

THREAD_ROOT = re.compile(r"^thread \((?P<tid>\d+)\)(?:: ?(?P<name>.*))?$")
Frame = tuple[str, str]  # (function, file or library)


def _native(file: str) -> bool:
    return not (file.endswith(".py") or file.startswith("<"))


def _unresolved_libc(frame: Frame) -> bool:
    return frame[0].startswith("0x") and "libc.so" in frame[1]


_IDLE_IO = frozenset({"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select",
                      "pselect", "pselect64"})  # fmt: skip
# In a Python thread, CPython's GIL is the condition variable these wait on (take_gil
# inlines into its callers, so it is rarely named); grpc's own waits run on its C threads.
_COND_WAITS = frozenset({"pthread_cond_wait", "pthread_cond_timedwait", "pthread_cond_clockwait"})
# A Python lock, Condition or queue: CPython's locks are semaphores.
_LOCK_WAITS = frozenset({"sem_wait", "sem_timedwait", "sem_clockwait", "PyThread_acquire_lock",
                         "PyThread_acquire_lock_timed", "lock_PyThread_acquire_lock",
                         "acquire_timed"})  # fmt: skip
_SLEEPS = frozenset({"nanosleep", "clock_nanosleep", "usleep", "sleep"})
# libc's system call wrappers: a thread stopped in one is in the kernel (perf's lines) or,
# far more often here, runnable: preempted as the call returned, because the wake-up it or
# an interrupt caused is taken there (a getpid that perf puts at 0.1 % of the CPU got 14 %
# of the event loop's samples).
_SYSCALL_WRAPPERS = frozenset({
    "getpid", "write", "read", "writev", "readv", "send", "sendto", "sendmsg", "recv",
    "recvfrom", "recvmsg", "epoll_ctl", "sem_post", "pthread_cond_signal",
    "pthread_cond_broadcast", "syscall", "ioctl", "close", "fcntl", "fcntl64", "accept4",
    "openat", "fstat", "lseek", "fdatasync", "fsync", "__getpid", "eventfd_write",
})  # fmt: skip
GIL_WAIT = "GIL wait"
IDLE_IO = "idle: epoll / poll (I/O wait)"
FUTEX_WAIT = "futex wait (unresolved libc: a mutex, e.g. the GIL's)"
AT_SYSCALL = "at a system call (in the kernel, or runnable: parked there)"


def wait_kind(frames: Sequence[Frame]) -> str | None:
    """Why a sample's thread was not running user code, from its innermost named frame
    (unresolved libc frames below it are the futex); None: it was running.

    1. epoll / poll / select: idle, waiting for I/O.
    2. pthread_cond_*wait: the GIL (see `_COND_WAITS`).
    3. a semaphore or CPython's lock acquire with libc below it: a Python lock.
    4. nanosleep and kin: a sleep.
    5. a libc system call wrapper: not counted as running (`_SYSCALL_WRAPPERS`).
    6. two or more unresolved libc frames and nothing named: a futex wait (a mutex: the
       GIL's own, or a library's); one alone is libc work (memcpy and kin are unexported).
    """
    named = len(frames)
    while named and _unresolved_libc(frames[named - 1]):
        named -= 1
    below = len(frames) - named
    function = frames[named - 1][0] if named else ""
    if function in _IDLE_IO:
        return IDLE_IO
    if function in _COND_WAITS:
        return GIL_WAIT
    if function in _LOCK_WAITS and (below or function.startswith("sem_")):
        return f"lock wait in {_python_caller(frames[:named])}"
    if function in _SLEEPS:
        return "sleep"
    if function in _SYSCALL_WRAPPERS and "libc.so" in frames[named - 1][1]:
        return AT_SYSCALL
    if below >= 2:
        return FUTEX_WAIT
    return None


def _python_caller(frames: Sequence[Frame]) -> str:
    for function, file in reversed(frames):
        if not _native(file):
            return f"{function} ({file})"
    return "C code"


# Where the CPU runs: the innermost frame's code. (label, test of (function, file)), in order.
_LIBUV_FILES = frozenset({"core.c", "linux.c", "loop-watcher.c", "queue.h", "async.c", "timer.c",
                          "stream.c", "tcp.c", "uv-common.c", "heap-inl.h", "threadpool.c",
                          "poll.c", "signal.c", "udp.c", "pipe.c", "getaddrinfo.c"})  # fmt: skip
_AIOHTTP_C = frozenset({"_http_parser.c", "_http_writer.c", "llhttp.c", "api.c", "http.c",
                        "_helpers_c.c", "_multidict.c", "bulk_update.h", "identity.h",
                        "hashtable.h", "htkeys.h", "iter.h", "views.h", "pair_list.h", "state.h",
                        "_quoting_c.c", "_frozenlist.cpp", "parser.c", "url_parser.c"})  # fmt: skip
_AIOHTTP_PACKAGES = ("aiohttp/", "multidict/", "yarl/", "propcache/", "frozenlist/", "httptools/")
_CRYPTO_FILES = ("libcrypto", "libssl", "cryptography/", "_hashopenssl.c")
GRPC_CORE = "grpc core (C/C++, and its Cython layer: cygrpc)"
CRYPTO = "OpenSSL / cryptography (signatures, hashes)"
UVLOOP = "uvloop / libuv"
PROTOBUF = "protobuf (upb)"
AIOHTTP_C = "HTTP client C parts (httptools/llhttp, aiohttp's parser, multidict, yarl)"
JSON_C = "JSON in C (_json)"
LIBC = "libc (system call wrappers, memcpy and kin)"
CPYTHON_C = "CPython runtime in C (lookups, calls, objects, C modules)"
CPYTHON_EVAL = "CPython eval (Python bytecode)"
GC = "CPython GC"
_LIBRARIES: tuple[tuple[str, Callable[[str, str], bool]], ...] = (
    (GRPC_CORE, lambda fn, f: "cygrpc" in f or "libgrpc" in f),
    (CRYPTO, lambda fn, f: any(k in f for k in _CRYPTO_FILES)),
    (PROTOBUF, lambda fn, f: "_message.abi3" in f or fn.startswith(("upb_", "_upb", "PyUpb_"))),
    (UVLOOP, lambda fn, f: "uvloop/" in f or f == "loop.c" or f in _LIBUV_FILES
     or fn.startswith(("uv_", "uv__"))),
    (AIOHTTP_C, lambda fn, f: f in _AIOHTTP_C or any(k in f for k in _AIOHTTP_PACKAGES)),
    (JSON_C, lambda fn, f: f == "_json.c" or "_json." in f),
    (LIBC, lambda fn, f: "libc.so" in f or "libpthread" in f or "libm.so" in f),
    (CPYTHON_C, lambda fn, f: "libpython" in f or f.endswith((".c", ".h"))),
)
_GC_FUNCTIONS = frozenset({"gc_collect_main", "gc_collect_with_callback", "collect",
                           "gc_collect_generations", "subtract_refs", "update_refs",
                           "move_unreachable", "visit_decref", "visit_reachable",
                           "deduce_unreachable", "delete_garbage", "finalize_garbage"})  # fmt: skip


def _gc(frames: Sequence[Frame]) -> bool:
    return any(fn in _GC_FUNCTIONS or f == "gcmodule.c" for fn, f in frames if _native(f))


def library(frame: Frame) -> str | None:
    """The `_LIBRARIES` label of a native frame; None for a Python frame."""
    function, file = frame
    if not _native(file):
        return None
    return next((label for label, test in _LIBRARIES if test(function, file)),
                f"other native: {Path(file).name}")  # fmt: skip


def mechanism(frames: Sequence[Frame]) -> str:
    """Where a running sample's CPU runs: GC if collecting, else its innermost frame's
    library, or CPython's eval loop when that frame is Python code."""
    if _gc(frames):
        return GC
    return library(frames[-1]) or CPYTHON_EVAL if frames else "?"


# What the CPU is for. Python frames claim by area (`area`), native ones by library;
# CPython's runtime, libc and generic stdlib modules claim nothing (they serve their caller).
HANDOFF = "thread hand-off (the bridge's Handed/LoopHandoff, futures, locks, wakes)"
EVENT_LOOP = "event loop (asyncio, uvloop, libuv: scheduling, sockets)"
AIOHTTP = "HTTP client libraries (aiohttp, httptools, yarl, multidict)"
JSON_WORK = "JSON (strictjson, json)"
SIGNATURES = "signature verification and hashing (cryptography, jwt, hashlib)"
AUDIT = "audit (event, serialize, hash, write)"
TELEMETRY = "logging / metrics / tracing hooks"
GRPC_PY = "grpc Python layer (grpc/_server.py)"
PROTOBUF_WORK = "protobuf (upb)"
_BY_AREA = {
    "asyncio": EVENT_LOOP, "uvloop": EVENT_LOOP, "concurrent": HANDOFF, "threading": HANDOFF,
    "queue": HANDOFF, "aiohttp": AIOHTTP, "yarl": AIOHTTP, "multidict": AIOHTTP,
    "propcache": AIOHTTP, "frozenlist": AIOHTTP, "aiosignal": AIOHTTP,
    "aiohappyeyeballs": AIOHTTP, "httptools": AIOHTTP, "json": JSON_WORK,
    "cryptography": SIGNATURES, "jwt": SIGNATURES, "hashlib": SIGNATURES,
    "google": PROTOBUF_WORK, "grpc": GRPC_PY, "logging": TELEMETRY,
    "opentelemetry": TELEMETRY, "prometheus_client": TELEMETRY,
}  # fmt: skip
_BY_LIBRARY = {
    GRPC_CORE: GRPC_CORE, CRYPTO: SIGNATURES, PROTOBUF: PROTOBUF_WORK, UVLOOP: EVENT_LOOP,
    AIOHTTP_C: AIOHTTP, JSON_C: JSON_WORK,
}  # fmt: skip
_HANDOFF_FUNCTIONS = frozenset({"run_coroutine_threadsafe", "call_soon_threadsafe",
                                "_write_to_self", "uv_async_send", "UVAsync_send",
                                "pthread_cond_signal", "pthread_cond_broadcast", "sem_post",
                                "PyThread_release_lock", "lock_PyThread_release_lock"})  # fmt: skip
# piigate modules whose own work is one of the categories above, whatever they call.
_BY_PIIGATE_AREA = {"piigate.audit": AUDIT, "piigate.telemetry": TELEMETRY,
                    "piigate.strictjson": JSON_WORK}  # fmt: skip
_HANDOFF_CLASSES = ("Handed.", "LoopHandoff.")  # piigate/transport/bridge.py


def _claim(frame: Frame) -> str | None:
    function, file = frame
    if function.rpartition(".")[2] in _HANDOFF_FUNCTIONS or function.endswith(
        "call_soon_threadsafe"
    ):
        return HANDOFF
    if _native(file):
        if file.endswith("_asynciomodule.c") or file.endswith("_asynciomodule.c.h"):
            return EVENT_LOOP
        if file.startswith("_queuemodule.c"):
            return HANDOFF
        return _BY_LIBRARY.get(library(frame) or "")
    return _BY_AREA.get(area(file))


def _piigate_frame(frame: Frame) -> bool:
    part = area(frame[1])
    return part.startswith("piigate.") and not part.startswith(("piigate.cli", "piigate.__main__"))


def purpose(frames: Sequence[Frame]) -> str:
    """What a running sample's CPU is for: GC if collecting; else, below piigate's innermost
    frame (start-up frames aside), the innermost frame that claims it (`_claim`); else that
    piigate module's own work. A few piigate modules claim everything below them
    (`_BY_PIIGATE_AREA`, the bridge's hand-off classes)."""
    if _gc(frames):
        return GC
    inner = next((i for i in range(len(frames) - 1, -1, -1) if _piigate_frame(frames[i])), None)
    if inner is not None:
        function, file = frames[inner]
        part = area(file)
        whole = next((label for prefix, label in _BY_PIIGATE_AREA.items()
                      if part == prefix or part.startswith(prefix + ".")), None)  # fmt: skip
        if whole is None and part == "piigate.transport.bridge" and function.startswith(
            _HANDOFF_CLASSES
        ):
            whole = HANDOFF
        if whole is not None:
            return whole
    for frame in reversed(frames[inner + 1 :] if inner is not None else frames):
        claimed = _claim(frame)
        if claimed is not None:
            return claimed
    if inner is not None:
        return f"piigate: {area(frames[inner][1])} (own code)"
    return "CPython, no library or piigate frame"


def _group(name: str, stacks: Iterable[Sequence[Frame]]) -> str:
    functions = {(fn, f) for frames in stacks for fn, f in frames if not _native(f)}
    if name == "MainThread":
        return "event loop (main thread)"
    if any(fn == "_serve" and f.endswith("grpc/_server.py") for fn, f in functions):
        return "grpc completion-queue thread (_serve)"
    if any(fn == "_worker" and f.endswith("concurrent/futures/thread.py") for fn, f in functions):
        return "handler threads (thread pool)"
    return "other Python threads"


def _c_thread(name: str) -> tuple[str, str, str]:
    """A thread py-spy never sampled (no Python state): its group, where its CPU runs and
    what it is for."""
    if name.startswith(("event_engine", "grpc")) or name == "lifeguard":
        return "grpc C threads: EventEngine, timer (not sampled)", GRPC_CORE, GRPC_CORE
    if name.startswith("libuv"):
        return "libuv worker threads (not sampled)", UVLOOP, EVENT_LOOP
    label = f"other C threads: {name} (not sampled)"
    return label, label, label


@dataclass
class _Thread:
    name: str
    frames: list[tuple[list[Frame], int]] = field(default_factory=list)


def _threads(stacks: Stacks) -> dict[int, _Thread]:
    out: dict[int, _Thread] = {}
    for raw, count in stacks:
        root = THREAD_ROOT.match(raw[0]) if raw else None
        tid, name = (int(root["tid"]), root["name"] or "") if root else (0, "")
        frames = [frame_name(f) for f in (raw[1:] if root else raw)]
        out.setdefault(tid, _Thread(name)).frames.append((frames, count))
    return out


# Kernel time by function (perf has no stacks): (label, prefixes of its functions). The
# scheduler's lines include the time a switch spends with interrupts off, which the timer
# can only sample as they come back on (finish_task_switch, *_unlock_irq*).
KERNEL_SWITCH = "kernel: scheduler (context switches, wake-ups)"
_KERNEL: tuple[tuple[str, tuple[str, ...]], ...] = (
    (KERNEL_SWITCH, ("finish_task_switch", "__schedule", "schedule", "_raw_spin_unlock_irq",
                     "__switch_to", "try_to_wake_up", "ttwu_", "enqueue_", "dequeue_",
                     "update_curr", "pick_next", "psi_", "select_task_rq", "set_next_entity",
                     "__wake_up", "wake_up_q", "check_preempt", "put_prev", "resched_")),
    ("kernel: futex (locks, the GIL, condition variables)", ("futex", "__futex", "get_futex")),
    ("kernel: epoll", ("ep_", "do_epoll", "__x64_sys_epoll", "epoll")),
    ("kernel: TCP over loopback", ("tcp_", "__tcp", "ip_", "__ip", "inet_", "sock_", "__sock",
                                   "sk_", "skb_", "__skb", "kfree_skb", "__sys_send",
                                   "__sys_recv", "net_", "__netif", "netif_", "process_backlog",
                                   "loopback", "__dev_queue", "dev_hard", "handle_softirqs",
                                   "__do_softirq", "do_softirq", "__local_bh", "napi",
                                   "nf_", "security_sock", "release_sock", "lock_sock")),
    ("kernel: py-spy's stops (ptrace, signals)", ("ptrace", "do_signal_stop", "get_signal",
                                                  "signal_", "do_notify", "arch_do_signal")),
    ("kernel: system call entry and exit", ("do_syscall_64", "entry_SYSCALL", "syscall_",
                                            "exit_to_user_mode", "__rseq", "rseq_",
                                            "syscall_exit", "__x64_sys")),
)  # fmt: skip


def kernel_category(symbol: str) -> str:
    return next((label for label, prefixes in _KERNEL if symbol.startswith(prefixes)),
                "kernel: other (memory, files, timers)")  # fmt: skip


CPYTHON_ALLOC = "memory: CPython's alloc, free, dealloc; libc malloc, free"
CPYTHON_GIL = "locks and the GIL in user space (CPython take/drop, libc futex wrappers)"
_LIBC_ALLOC = ("malloc", "_int_malloc", "_int_free", "free", "cfree", "realloc", "calloc",
               "malloc_consolidate", "__libc_malloc", "__libc_free", "tcache", "_int_realloc",
               "unlink_chunk")  # fmt: skip
_LIBC_LOCKS = ("__futex", "futex", "__lll_lock", "lll_lock", "sem_", "pthread_cond",
               "pthread_mutex", "__pthread_mutex", "___pthread_mutex", "__new_sem",
               "__pthread_cond", "___pthread_cond")  # fmt: skip
_ALLOC = ("Malloc", "Free", "dealloc", "Dealloc", "_alloc", "GC_Del", "GC_New", "GC_Track",
          "GC_UnTrack", "NewReference", "Trash", "free_keys", "new_keys")  # fmt: skip
_GIL = ("take_gil", "drop_gil", "PyEval_RestoreThread", "PyEval_SaveThread",
        "PyEval_AcquireThread", "PyEval_ReleaseThread", "PyGILState", "PyThread_acquire",
        "PyThread_release", "lock_PyThread", "acquire_timed")  # fmt: skip


def _cpython_part(symbol: str) -> str:
    if symbol.startswith("_PyEval_EvalFrame"):
        return CPYTHON_EVAL
    if symbol.startswith(_GIL):
        return CPYTHON_GIL
    if any(part in symbol for part in _ALLOC):
        return CPYTHON_ALLOC
    return CPYTHON_C


def perf_mechanism(symbol: str, library_name: str) -> str:
    """Where one perf sample's CPU ran: the kernel by function, else `mechanism`'s library
    (CPython's eval loop is `_PyEval_EvalFrameDefault`)."""
    if library_name.startswith("[kernel"):
        return kernel_category(symbol)
    if symbol in _GC_FUNCTIONS or symbol.startswith("gc_"):
        return GC
    if "libpython" in library_name:
        return _cpython_part(symbol)
    if library_name == "[vdso]":
        return LIBC
    if "libc.so" in library_name:
        if symbol.split("@")[0] in _LIBC_ALLOC:
            return CPYTHON_ALLOC
        if symbol.startswith(_LIBC_LOCKS):
            return CPYTHON_GIL
    return library((symbol, library_name)) or CPYTHON_C


def _lines(counter: Counter[str] | dict[str, float], total: float, per_call: float | None,
           n: int) -> list[str]:  # fmt: skip
    ranked = sorted(counter.items(), key=lambda kv: -kv[1])[:n]
    return [f"  {v / total:6.1%}" + (f" {v / total * per_call:6.0f} µs" if per_call else "")
            + f"  {label}" for label, v in ranked if v > 0]  # fmt: skip


View = dict[str, dict[str, float]]  # thread group -> label -> CPU seconds
Counts = dict[str, Counter[str]]  # thread group -> label -> samples


def _view() -> View:
    return defaultdict(lambda: defaultdict(float))


def _counts() -> Counts:
    return defaultdict(Counter)


@dataclass
class _Attribution:
    """The py-spy part's CPU by thread group, each split three ways (where it ran, what it
    was for, piigate's functions inclusive), with what each group's samples showed.

    Each sampled thread's /proc CPU is split by perf's kernel share of its group: the
    kernel part is one line per group (perf says what it is), the rest is shared by the
    thread's running samples, at most one period each. A thread whose running samples
    cover less than half its user CPU (py-spy stops the threads one by one, so the later
    ones run on into their waits first: `sample_in_place`) keeps its user CPU as one line
    rather than a few samples standing for all of it."""

    kernel_share: dict[str, float]  # group -> perf's share of kernel samples in it
    rate_hz: int = RATE_HZ
    by_thread: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    seen_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    time_split: Counts = field(default_factory=_counts)  # group -> what its samples showed
    where: View = field(default_factory=_view)
    what: View = field(default_factory=_view)
    own: View = field(default_factory=_view)

    def add_thread(self, group: str, thread: _Thread, cpu: float | None) -> None:
        stacks = [(frames, count, wait_kind(frames)) for frames, count in thread.frames if frames]
        busy = sum(count for _, count, kind in stacks if kind is None)
        for _, count, kind in stacks:
            self.time_split[group][kind or "running (CPU)"] += count
        period = 1 / self.rate_hz
        cpu = busy * period if cpu is None else cpu
        self.by_thread[group] += cpu
        self.seen_s[group] += busy * period
        kernel = cpu * self.kernel_share.get(group, 0.0)
        user = cpu - kernel
        weight = min(period, user / busy) if busy and busy * period >= user / 2 else 0.0
        for frames, count, kind in stacks:
            if kind is None and weight:
                self.where[group][mechanism(frames)] += count * weight
                self.what[group][purpose(frames)] += count * weight
                for label in {f"{fn} ({f})" for fn, f in frames if _piigate_frame((fn, f))
                              and fn.rpartition(".")[2] not in SCAFFOLDING}:  # fmt: skip
                    self.own[group][label] += count * weight
        for label, left in ((f"kernel time of {group}", kernel),
                            (f"user CPU of {group} py-spy never caught running",
                             user - busy * weight)):  # fmt: skip
            if left > 1e-9:
                self.where[group][label] += left
                self.what[group][label] += left

    def add_c_thread(self, name: str, cpu: float) -> None:
        group, runs_in, serves = _c_thread(name)
        self.by_thread[group] += cpu
        self.where[group][runs_in] += cpu
        self.what[group][serves] += cpu

    def scaled(self, view: View, totals: dict[str, float], perf_groups: Counts
               ) -> dict[str, float]:  # fmt: skip
        """`view` over all groups, each group scaled to its CPU in `totals` (perf's part,
        when it ran: py-spy's stops load the threads unevenly), the per-group lines
        labelled with what perf saw the group run."""
        out: dict[str, float] = defaultdict(float)
        for group, labels in view.items():
            spy_cpu = self.by_thread[group]
            scale = totals.get(group, 0.0) / spy_cpu if spy_cpu else 0.0
            for label, cpu in labels.items():
                if label.startswith(("kernel time of", "user CPU of")):
                    kind = "kernel" if label.startswith("kernel") else ""
                    label = f"{label}: {_split(perf_groups.get(group), kind) or 'no perf'}"
                out[label] += cpu * scale
        for group, cpu in totals.items():  # groups only perf's part had
            if group not in self.by_thread and cpu > 0:
                out[f"{group} (only in perf's part)"] += cpu
        return out


def _split(counts: Counter[str] | None, prefix: str) -> str:
    """The top few of a group's perf categories starting (or, prefix "": not starting) with
    `kernel`, as shares of those."""
    if not counts:
        return ""
    chosen = {k: v for k, v in counts.items() if k.startswith("kernel") == bool(prefix)}
    n = sum(chosen.values())
    return ", ".join(f"{k.removeprefix('kernel: ')} {v / n:.0%}"
                     for k, v in Counter(chosen).most_common(3)) if n else ""  # fmt: skip


def summarize_native(
    stacks: Stacks, spy: Phase | None = None, perf: PerfSamples | None = None,
    perf_phase: Phase | None = None, cpu_us_per_call: float | None = None, top: int = 15,
) -> list[str]:  # fmt: skip
    """The process's CPU by thread group; where it runs (perf when given, else py-spy's
    innermost frames) and what it is for (py-spy's stacks), each share with its µs per call;
    piigate's functions inclusive; and, apart, how the sampled threads' time splits between
    running and each kind of wait.

    With perf's part, each group's CPU is perf's part's and py-spy only splits it; µs per
    call: that part's own CPU per call when its calls were counted, else
    `cpu_us_per_call`. Without /proc CPU (`spy.threads`) a running sample counts a period."""
    sampled = _threads(stacks)
    if not sampled:
        return ["no samples"]
    spy, perf_phase = spy or Phase(), perf_phase or Phase()
    groups = {tid: _group(t.name, (f for f, _ in t.frames)) for tid, t in sampled.items()}
    perf_groups = _perf_groups(perf or Counter(), groups, perf_phase.threads)
    kernel_share = {g: sum(v for k, v in c.items() if k.startswith("kernel")) / sum(c.values())
                    for g, c in perf_groups.items() if c}  # fmt: skip
    a = _Attribution(kernel_share, spy.rate_hz)
    for tid, thread in sampled.items():
        a.add_thread(groups[tid], thread, spy.threads[tid][1] if tid in spy.threads else None)
    for tid, (name, cpu) in spy.threads.items():
        if tid not in sampled and cpu > 0:
            a.add_c_thread(name, cpu)
    totals = _group_cpu(perf_phase.threads, groups) if perf_phase.threads else a.by_thread
    total = sum(totals.values())
    if total <= 0:
        return ["no CPU in the recorded window"]
    per_call = (perf_phase if perf_phase.threads else spy).per_call_us() or cpu_us_per_call
    n_samples = sum(count for thread in sampled.values() for _, count in thread.frames)
    lines = [f"py-spy: {n_samples} samples of {len(sampled)} Python threads at {spy.rate_hz} Hz"
             + ("" if spy.threads else " (no /proc: a running sample counts a period)"),
             _per_call_line(spy, perf_phase, cpu_us_per_call)]  # fmt: skip
    lines += _thread_lines(a, totals, perf_groups, "perf's" if perf_phase.threads else "py-spy's")
    if perf:
        lines += _perf_lines(perf_groups, per_call, top)
    else:
        lines.append("where the CPU runs (py-spy's innermost frames):")
        lines += _lines(a.scaled(a.where, totals, perf_groups), total, per_call, top)
    lines.append("what the CPU is for (py-spy: the innermost library below piigate's innermost "
                 "frame; else that piigate module):")  # fmt: skip
    lines += _lines(a.scaled(a.what, totals, perf_groups), total, per_call, top + 5)
    lines.append("inclusive CPU of piigate's functions (the stages; py-spy):")
    lines += _lines(a.scaled(a.own, totals, perf_groups), total, per_call, top + 5)
    return lines


def _group_cpu(threads: ThreadCpu, groups: dict[int, str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for tid, (name, cpu) in threads.items():
        out[groups.get(tid) or _other_group(name)] += cpu
    return out


def _other_group(name: str) -> str:
    return "other Python threads" if name == "python" else _c_thread(name)[0]


def _per_call_line(spy: Phase, perf_phase: Phase, run_us: float | None) -> str:
    parts = [f"{name}: {phase.calls} calls, {phase.cpu_s:.2f} s CPU, "
             f"{phase.per_call_us():.0f} µs per call"
             for name, phase in (("py-spy's part", spy), ("perf's part", perf_phase))
             if phase.per_call_us()]  # fmt: skip
    if run_us:
        parts.append(f"whole profiled run {run_us:.0f} µs per call")
    used = "perf's part's" if perf_phase.threads else "py-spy's part's"
    if not (perf_phase if perf_phase.threads else spy).per_call_us():
        used = "the run's"
    return f"{'; '.join(parts) or 'no CPU per call'} (µs = share × {used} CPU per call)"


def _thread_lines(a: _Attribution, totals: dict[str, float], perf_groups: Counts, part: str
                  ) -> list[str]:  # fmt: skip
    total, spy_total = sum(totals.values()), sum(a.by_thread.values())
    lines = [f"CPU by thread group (/proc in {part} part; in py-spy's part [and its running "
             "samples / rate]; perf's kernel share):"]  # fmt: skip
    for label in sorted(set(totals) | set(a.by_thread), key=lambda g: -totals.get(g, 0.0)):
        cpu, spy_cpu = totals.get(label, 0.0), a.by_thread.get(label, 0.0)
        check = f" [{a.seen_s[label]:.2f} s]" if label in a.seen_s else ""
        split = perf_groups.get(label, Counter())
        n = sum(split.values())
        kernel = sum(v for k, v in split.items() if k.startswith("kernel"))
        lines.append(f"  {cpu / total:6.1%} {cpu:5.2f} s  (py-spy's part "
                     f"{spy_cpu / spy_total:4.0%}{check})  {label}"
                     + (f"  kernel {kernel / n:.0%}" if n else ""))  # fmt: skip
    lines.append("time of the sampled threads (share of each group's samples; not running is "
                 "not CPU):")  # fmt: skip
    for group, split in a.time_split.items():
        n = sum(split.values())
        parts = ", ".join(f"{k} {v / n:.0%}" for k, v in split.most_common(5) if v / n >= 0.005)
        lines.append(f"  {group}: {parts}")
    return lines


def _perf_lines(perf_groups: Counts, per_call: float | None, top: int) -> list[str]:
    everything: Counter[str] = Counter()
    for split in perf_groups.values():
        everything.update(split)
    n = sum(everything.values())
    lines = [f"where the CPU runs (perf, {n} samples; kernel by function):"]
    lines += _lines(everything, n, per_call, top)
    lines.append("  by thread group (perf):")
    for group, split in sorted(perf_groups.items(), key=lambda kv: -sum(kv[1].values())):
        g = sum(split.values())
        parts = ", ".join(f"{k} {v / g:.0%}" for k, v in split.most_common(6) if v / g >= 0.02)
        lines.append(f"    {group} ({g / n:.0%}): {parts}")
    return lines


def _perf_groups(perf: PerfSamples, groups: dict[int, str], names: ThreadCpu) -> Counts:
    """perf's samples by thread group (py-spy's groups by thread id; the rest by name) and
    by where they ran."""
    out: Counts = _counts()
    for (tid, comm, symbol, library_name), n in perf.items():
        group = groups.get(tid) or _other_group(names.get(tid, (comm, 0.0))[0])
        out[group][perf_mechanism(symbol, library_name)] += n
    return out
