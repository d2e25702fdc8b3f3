"""Summaries of py-spy's collapsed stacks."""

from __future__ import annotations

from bench.profile import area, frame_name, parse_collapsed, summarize

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
