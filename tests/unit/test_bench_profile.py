"""Summaries of py-spy's collapsed stacks, Python-only and native (with perf's samples)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import parse_args
from bench.profile import (
    LineCount,
    Phase,
    area,
    frame_name,
    native_rate,
    parse_collapsed,
    parse_perf_script,
    read_perf,
    summarize,
    write_perf,
)
from bench.profile_native import (
    AIOHTTP,
    AT_SYSCALL,
    AUDIT,
    CPYTHON_ALLOC,
    CPYTHON_C,
    CPYTHON_EVAL,
    CPYTHON_GIL,
    EVENT_LOOP,
    FUTEX_WAIT,
    GC,
    GIL_WAIT,
    GRPC_CORE,
    HANDOFF,
    IDLE_IO,
    KERNEL_SWITCH,
    PROTOBUF,
    SIGNATURES,
    UVLOOP,
    kernel_category,
    mechanism,
    perf_mechanism,
    purpose,
    summarize_native,
    wait_kind,
)

RAW = """\
<module> (piigate/__main__.py:5);Handle._run (asyncio/events.py:80);verify (piigate/tokens/verification.py:300);RSAAlgorithm.verify (jwt/algorithms.py:400) 30
<module> (piigate/__main__.py:5);Handle._run (asyncio/events.py:80) 50
Thread._bootstrap (threading.py:995);Thread.run (threading.py:975) 20
"""  # noqa: E501


def test_collapsed_lines_become_frames_and_counts() -> None:
    stacks = parse_collapsed(RAW + "garbage\n")
    assert [count for _, count in stacks] == [30, 50, 20]
    assert stacks[0][0][-1] == "RSAAlgorithm.verify (jwt/algorithms.py:400)"


def test_frames_and_areas() -> None:
    assert frame_name("verify (piigate/tokens/verification.py:300)") == (
        "verify", "piigate/tokens/verification.py"
    )  # fmt: skip
    assert area("piigate/tokens/verification.py") == "piigate.tokens.verification"
    assert area("aiohttp/client.py") == "aiohttp"
    assert area("threading.py") == "threading"


def test_summary_shares() -> None:
    lines = summarize(parse_collapsed(RAW))
    assert lines[0].startswith("100 samples")
    assert "   80.0%  main thread (event loop, handlers)" in lines
    poller = "20.0%  other threads (grpc.aio completion-queue poller: grpc core, C)"
    assert any(line.endswith(poller) for line in lines)
    assert "   50.0%  asyncio" in lines
    assert "   30.0%  verify (piigate/tokens/verification.py)" in lines  # inclusive, own code


THREADED = """\
Thread._bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:81) 40
Thread._bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:83);_call (piigate/transport/bridge.py:110);Condition.wait (threading.py:320) 30
Thread._bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:83);_call (piigate/transport/bridge.py:105);LoopSideContext.__init__ (piigate/transport/bridge.py:60) 5
Thread._bootstrap (threading.py:995);_serve (grpc/_server.py:1200) 15
<module> (piigate/__main__.py:5);Handle._run (asyncio/events.py:80) 10
"""  # noqa: E501


def test_waiting_handler_threads_are_shown_but_kept_out_of_the_cpu_tables() -> None:
    lines = summarize(parse_collapsed(THREADED))
    assert "   70.0%  handler threads, waiting (GIL released; not CPU)" in lines
    assert "    5.0%  handler threads (thread-pool server)" in lines
    assert any(line.startswith("   15.0%  grpc server thread") for line in lines)
    assert "below: the 30 samples that were not waiting" in lines
    # Shares of the 30 busy samples: the event loop 10, the grpc thread 15, a handler 5.
    assert "   50.0%  _serve (grpc/_server.py)" in lines
    assert "   16.7%  piigate.transport.bridge" in lines


# Native stacks (py-spy --native --idle --threads) and perf samples: bench.profile_native.

LIBC = "libc.so.6"
CYGRPC = "grpc/_cython/cygrpc.cpython-311-x86_64-linux-gnu.so"
LOOP = ("thread (100): MainThread;0x7f01 (libc.so.6);<module> (piigate/__main__.py:5);"
        "run (piigate/cli/serve.py:68);run_forever (loop.c:33192);Loop__run (loop.c:20313)")
HANDLER = ("thread (200): piigate-rpc_0;thread_run (libpython3.11.so.1.0);"
           "Thread._bootstrap (threading.py:1002);_worker (concurrent/futures/thread.py:83);"
           "_unary_response_in_pool (grpc/_server.py:788);"
           "BridgedService._run (piigate/transport/bridge.py:234)")
STAGE = f"{LOOP};task_step (_asynciomodule.c:2990);_counted (piigate/transport/bridge.py:253)"
NATIVE = f"""\
{LOOP};uv_run (core.c:464);uv__io_poll (linux.c:1452);epoll_pwait (libc.so.6) 50
{STAGE};verify (piigate/tokens/verification.py:300);bn_mul (cryptography/hazmat/bindings/_rust.abi3.so) 20
{STAGE};_write (piigate/audit/sink.py:170);encoder_call (_json.c:1200) 10
{STAGE};CallReads.read (piigate/vault/reads.py:88);getpid (libc.so.6) 10
{STAGE};_item (piigate/pipeline.py:211) 10
{HANDLER};Handed.wait (piigate/transport/bridge.py:94);PyThread_acquire_lock_timed (libpython3.11.so.1.0);0x7f02 (libc.so.6);0x7f03 (libc.so.6) 90
{HANDLER};0x7f04 ({CYGRPC}) 10
"""  # noqa: E501


def frames_of(line: str) -> list[tuple[str, str]]:
    """A collapsed line's frames, its thread root and count dropped."""
    return [frame_name(f) for f in line.rpartition(" ")[0].split(";")[1:]]


def test_wait_kinds_tell_idle_gil_locks_and_syscalls_from_running() -> None:
    assert wait_kind([("uv__io_poll", "linux.c"), ("epoll_pwait", LIBC)]) == IDLE_IO
    gil = [("lock_PyThread_acquire_lock", "libpython3.11.so.1.0"),
           ("pthread_cond_timedwait", LIBC), ("0x7f05", LIBC)]  # fmt: skip
    assert wait_kind(gil) == GIL_WAIT
    lock = [("Handed.wait", "piigate/transport/bridge.py"),
            ("PyThread_acquire_lock_timed", "libpython3.11.so.1.0"), ("0x1", LIBC), ("0x2", LIBC)]
    assert wait_kind(lock) == "lock wait in Handed.wait (piigate/transport/bridge.py)"
    assert wait_kind([("peek", "piigate/tokens/jws.py"), ("getpid", LIBC)]) == AT_SYSCALL
    futex = [("uv__queue_empty", "queue.h"), ("0x1", LIBC), ("0x2", LIBC)]
    assert wait_kind(futex) == FUTEX_WAIT
    assert wait_kind([("peek", "piigate/tokens/jws.py"), ("0x1", LIBC)]) is None  # a memcpy
    assert wait_kind([("peek", "piigate/tokens/jws.py")]) is None


def test_where_the_cpu_runs_is_the_innermost_frames_library() -> None:
    assert mechanism([("_serve", "grpc/_server.py"), ("0x1", CYGRPC)]) == GRPC_CORE
    assert mechanism([("peek", "piigate/tokens/jws.py")]) == CPYTHON_EVAL
    assert mechanism([("f", "a.py"), ("upb_Decode", "_message.abi3.so")]) == PROTOBUF
    assert mechanism([("f", "a.py"), ("uv__read", "stream.c")]) == UVLOOP
    assert mechanism([("f", "a.py"), ("gc_collect_main", "libpython3.11.so.1.0")]) == GC
    assert mechanism([("f", "a.py"), ("dict_get", "libpython3.11.so.1.0")]) == CPYTHON_C


def test_what_the_cpu_is_for_is_the_innermost_library_below_piigates_innermost_frame() -> None:
    lines = NATIVE.splitlines()
    assert purpose(frames_of(lines[1])) == SIGNATURES
    assert purpose(frames_of(lines[2])) == AUDIT  # the audit's JSON is the audit's
    assert purpose(frames_of(lines[4])) == "piigate: piigate.pipeline (own code)"
    assert purpose(frames_of(lines[6])) == GRPC_CORE  # below the handler, no piigate frame
    vault = [("VaultClient.detokenize", "piigate/vault/client.py"),
             ("ClientSession._request", "aiohttp/client.py"), ("Py_DECREF", "object.h")]
    assert purpose(vault) == AIOHTTP  # CPython's runtime serves its caller
    end = [("Handed._end", "piigate/transport/bridge.py"), ("sem_post", LIBC)]
    assert purpose(end) == HANDOFF
    # Start-up frames (piigate.cli) are no stage: the loop's own work is the loop's.
    assert purpose(frames_of(LOOP + ";uv__read (stream.c:1) 1")) == EVENT_LOOP


def test_native_summary_weights_each_threads_samples_by_its_cpu() -> None:
    spy = Phase({100: ("python", 0.15), 200: ("python", 0.1), 300: ("event_engine", 0.05)}, 300)
    lines = summarize_native(parse_collapsed(NATIVE), spy)
    assert lines[0] == "py-spy: 200 samples of 2 Python threads at 200 Hz"
    assert lines[1].startswith("py-spy's part: 300 calls, 0.30 s CPU, 1000 µs per call")
    assert any(line.startswith("   50.0%  0.15 s") and "event loop (main thread)" in line
               for line in lines)  # fmt: skip
    # The loop's 40 running samples share its 0.15 s: the signature check's 20 get half;
    # the getpid is a parked system call, not CPU.
    assert "   25.0%    250 µs  " + SIGNATURES in lines
    assert "   12.5%    125 µs  " + AUDIT in lines  # its JSON included
    # The EventEngine thread (never sampled) and the handler's one running stack.
    assert "   33.3%    333 µs  " + GRPC_CORE in lines
    # The handler's 10 running samples cover 0.05 s of its 0.1 s: the rest stays apart.
    assert any("user CPU of handler threads (thread pool) py-spy never caught running" in line
               and line.startswith("   16.7%") for line in lines)  # fmt: skip
    assert any("lock wait in Handed.wait (piigate/transport/bridge.py) 90%" in line
               for line in lines)  # fmt: skip


def test_with_perf_each_group_is_split_into_kernel_and_user_time() -> None:
    spy = Phase({100: ("python", 0.4), 200: ("python", 0.1)}, 500)
    perf_phase = Phase({100: ("python", 0.8), 200: ("python", 0.2)}, 1000)
    perf = parse_perf_script(PERF_SCRIPT, pid=42)
    assert sum(perf.values()) == 4  # the other process's sample is dropped
    lines = summarize_native(parse_collapsed(NATIVE), spy, perf, perf_phase)
    assert any(line.startswith("perf's part: 1000 calls, 1.00 s CPU, 1000 µs per call")
               for line in lines[1].split("; "))  # fmt: skip
    assert "   50.0%    500 µs  " + KERNEL_SWITCH in lines  # 2 of perf's 4 samples
    # Each group's CPU is perf's part's, split as py-spy saw it. The loop's perf samples are
    # half kernel: of its 0.8 s, 0.4 s is kernel and the signature check's 20 of its 40
    # running samples (0.1 s of its 0.4 s in py-spy's part) stand for 0.2 s.
    assert any(line.startswith("   40.0%    400 µs  kernel time of event loop (main thread)")
               for line in lines)  # fmt: skip
    assert "   20.0%    200 µs  " + SIGNATURES in lines


PERF_SCRIPT = """\
          python    42/100      7f6b9c2fb677 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)
          python    42/100  ffffffff8a0c1e2b finish_task_switch.isra.0 ([kernel.kallsyms])
          python    42/200  ffffffff8a0c1e2b finish_task_switch.isra.0 ([kernel.kallsyms])
          python    42/200      7f6b9c2fb677 malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
          python    43/300      7f6b9c2fb677 _PyEval_EvalFrameDefault (/usr/lib/libpython3.11.so.1.0)
"""  # noqa: E501


def test_perf_samples_by_where_they_ran() -> None:
    assert kernel_category("finish_task_switch.isra.0") == KERNEL_SWITCH
    assert kernel_category("tcp_sendmsg").startswith("kernel: TCP")
    assert perf_mechanism("malloc", "libc.so.6") == CPYTHON_ALLOC
    assert perf_mechanism("take_gil", "libpython3.11.so.1.0") == CPYTHON_GIL
    assert perf_mechanism("_PyEval_EvalFrameDefault", "libpython3.11.so.1.0") == CPYTHON_EVAL
    assert perf_mechanism("[unknown]", f"site-packages/{CYGRPC}") == GRPC_CORE
    samples = parse_perf_script(PERF_SCRIPT, pid=42)
    assert read_perf(write_perf(samples)) == samples


def test_phases_count_cpu_and_calls_between_snapshots(tmp_path: Path) -> None:
    before = {1: ("python", 1.0)}
    after = {1: ("python", 1.5), 2: ("event_engine", 0.2)}
    phase = Phase.between((before, 10), (after, 510))
    assert phase.calls == 500
    assert phase.per_call_us() == pytest.approx(1400)
    assert Phase.between((before, -1), (after, -1)).calls is None  # not counted
    log = tmp_path / "audit.jsonl"
    log.write_text("{}\n{}\n")
    count = LineCount(log)  # lines appended from now on
    with log.open("a") as f:
        f.write("{}\n{}\n{}\n")
    assert count() == 3
    assert [native_rate(n) for n in (4, 80, 1000)] == [200, 35, 20]


def test_profile_native_implies_profile() -> None:
    args = parse_args(["--profile-native", "--profile-inflight", "64"])
    assert (args.profile, args.profile_native, args.profile_inflight) == (True, True, 64)


def test_the_bridges_wait_is_a_wait_in_python_stacks() -> None:
    stacks = parse_collapsed(
        "Thread._bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:83);"
        "BridgedService._run (piigate/transport/bridge.py:234);"
        "Handed.wait (piigate/transport/bridge.py:94) 9\n"
        "<module> (piigate/__main__.py:5);Handle._run (asyncio/events.py:80) 1\n"
    )
    lines = summarize(stacks, rate_hz=35)
    assert lines[0] == "10 samples at 35 Hz (running, not idle), by thread:"
    assert "   90.0%  handler threads, waiting (GIL released; not CPU)" in lines
