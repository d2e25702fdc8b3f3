"""Vault HTTP client candidates side by side, against the real local vault.

    .venv/bin/python -m bench.vault_clients [--duration 3] [--concurrency 1,16]
                                            [--users 500] [--candidates a,b,...] [--no-pin]

The vault's detokenize is the largest controllable cost of a piigate call. This starts
the local vault as its own process (`bench.vault_load`: in memory, audit log to a file,
on CPU 0; this process on CPU 1), seeds `--users` records with a pointer token each, and
sends every candidate the same detokenize request piigate makes (`reason`, `custom_audit`,
one `token_ids`, two `props`; `Authorization` and `Accept`), with each call's token id
and request id varying as piigate's do, C requests in flight (1 and 16 by default), for a
warm-up and then `--duration` seconds. It prints, per candidate and concurrency,
requests/s, p50/p99 latency, this process's CPU per request (all its threads: pyreqwest's
Rust runtime and libcurl's work count) and the vault's, and which candidate used the
least CPU per request; the same goes to bench/results/vault-clients-<UTC time>.json.

The candidates (each builds its request per call, as piigate would; none parses JSON
except the first):
- `piigate`: piigate's own `VaultClient.detokenize` as `piigate.bootstrap` builds it (its
  HTTP/1.1 pool, `piigate.vault.http1`), strict JSON parse and checks included: the full
  cost of a vault call;
- `http1`: that pool alone (`Http1Pool.get` with the request `VaultClient` builds, its
  query encoding and headers, an `asyncio.timeout` per call), no parse: piigate's HTTP
  client alone;
- `aiohttp`: the same request on an aiohttp session built as piigate's vault session was
  (params list, headers dict, a ClientTimeout per call), body read by `Content-Length`,
  no parse: the HTTP client piigate used before `http1`;
- `aiohttp-tuned`: no cookie jar (`DummyCookieJar`), no automatic `User-Agent` /
  `Accept-Encoding` (`skip_auto_headers`), one reused header object and timeout, the URL
  as an already-encoded `yarl.URL`, `auto_decompress=False`;
- `pycurl`: libcurl's multi interface driven by the event loop (socket and timer
  callbacks), reused easy handles, headers set once per handle;
- `pyreqwest`: the Rust `reqwest` client (its own Tokio runtime), default headers set once,
  HTTP/1.1 only, no decompression;
- `h1`: `bench.h1client`, a minimal strict keep-alive client on asyncio protocols with
  `httptools` (llhttp), Content-Length bodies only.

The machine's noise applies (compare within one run); a candidate whose library is not
installed is skipped with a note (they are in the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

from bench import h1client, vault_load
from bench.traffic import percentile
from piigate import strictjson
from piigate.vault.client import DetokenizeQuery, VaultClient, form_value
from piigate.vault.http1 import Http1Pool

RESULTS = Path(__file__).resolve().parent / "results"
KEY = vault_load.ADMIN["Authorization"].removeprefix("Bearer ")
TOKENS_PATH = vault_load.API + "/data/collections/users/tokens"
PROPS = ("user_id", "ssn.mask")
REASON = "AppFunctionality"
MAX_BODY = 1 << 20
TIMEOUT_S = 5.0
LIMIT = 64  # connections, piigate's default vault.max_connections

Get = Callable[[str, str], Awaitable[tuple[int, bytes]]]  # (token id, request id) -> answer


def path_and_query(token_id: str, ref: str) -> str:
    """The request target, encoded once per call the same way for every tuned candidate."""
    return (f"{TOKENS_PATH}?reason={REASON}&custom_audit=piigate%20request%20{ref}"
            f"&token_ids={quote(token_id, safe='')}&props=user_id&props=ssn.mask")  # fmt: skip


def today_session() -> aiohttp.ClientSession:
    """As `piigate.bootstrap.build_parts` built the vault's."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=LIMIT, ttl_dns_cache=300),
        raise_for_status=False, auto_decompress=False,
    )  # fmt: skip


async def piigate_client(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    client = VaultClient(base, MAX_BODY, max_connections=LIMIT)

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        query = DetokenizeQuery(collection="users", token_ids=(token_id,), props=PROPS,
                                reason=REASON, adhoc_reason=None, api_key=KEY,
                                custom_audit=f"piigate request {ref}")  # fmt: skip
        found = await client.detokenize(query, TIMEOUT_S)
        return (200, b'[{"token_id"') if token_id in found else (404, b"")

    return get, client.aclose


async def http1_pool(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    pool = Http1Pool(base, LIMIT)
    path = yarl.URL(base.rstrip("/") + TOKENS_PATH).raw_path

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        params = [("reason", REASON), ("custom_audit", f"piigate request {ref}"),
                  ("token_ids", token_id), *(("props", p) for p in PROPS)]  # fmt: skip
        target = path + "?" + "&".join(f"{k}={form_value(v)}" for k, v in params)
        headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
        async with asyncio.timeout(TIMEOUT_S):
            return await pool.get(target, headers.items(), max_body_bytes=MAX_BODY)

    return get, pool.aclose


async def aiohttp_today(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    session = today_session()
    url = base.rstrip("/") + TOKENS_PATH

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        params = [("reason", REASON), ("custom_audit", f"piigate request {ref}"),
                  ("token_ids", token_id), *(("props", p) for p in PROPS)]  # fmt: skip
        headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}
        async with session.get(url, params=params, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
                               allow_redirects=False) as response:  # fmt: skip
            length = response.content_length or 0
            return response.status, await response.content.readexactly(length)

    return get, session.close


async def aiohttp_tuned(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=LIMIT, ttl_dns_cache=300),
        cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent", "Accept-Encoding"),
        raise_for_status=False, auto_decompress=False,
    )  # fmt: skip
    origin = base.rstrip("/")
    headers = CIMultiDictProxy(CIMultiDict(
        {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}))  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        url = yarl.URL(origin + path_and_query(token_id, ref), encoded=True)
        async with session.get(url, headers=headers, timeout=timeout,
                               allow_redirects=False) as response:  # fmt: skip
            length = response.content_length or 0
            return response.status, await response.content.readexactly(length)

    return get, session.close


class CurlMulti:
    """libcurl's multi interface on the running event loop (socket + timer callbacks)."""

    def __init__(self, base: str) -> None:
        import pycurl  # type: ignore[import-untyped]

        self.pycurl = pycurl
        self.loop = asyncio.get_running_loop()
        self.origin = base.rstrip("/")
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self.multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, LIMIT)
        self.free: list[Any] = []
        self.waiting: dict[Any, tuple[asyncio.Future[tuple[int, bytes]], bytearray]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def _handle(self) -> Any:
        if self.free:
            return self.free.pop()
        c, p = self.pycurl.Curl(), self.pycurl
        c.setopt(p.HTTPHEADER, [f"Authorization: Bearer {KEY}", "Accept: application/json"])
        c.setopt(p.TIMEOUT_MS, int(TIMEOUT_S * 1000))
        c.setopt(p.NOSIGNAL, 1)
        c.setopt(p.HTTP_VERSION, p.CURL_HTTP_VERSION_1_1)
        c.setopt(p.MAXFILESIZE, MAX_BODY)
        return c

    async def get(self, token_id: str, ref: str) -> tuple[int, bytes]:
        c = self._handle()
        body = bytearray()
        c.setopt(self.pycurl.URL, self.origin + path_and_query(token_id, ref))
        c.setopt(self.pycurl.WRITEFUNCTION, body.extend)
        future: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.waiting[c] = (future, body)
        self.multi.add_handle(c)
        return await future

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        p, loop = self.pycurl, self.loop
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        if what in (p.POLL_IN, p.POLL_INOUT):
            loop.add_reader(fd, self._act, fd, p.CSELECT_IN)
        if what in (p.POLL_OUT, p.POLL_INOUT):
            loop.add_writer(fd, self._act, fd, p.CSELECT_OUT)

    def _on_timer(self, ms: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if ms >= 0:
            self.timer = self.loop.call_later(ms / 1000, self._act, self.pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        while self.multi.socket_action(fd, event)[0] == self.pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, done, failed = self.multi.info_read()
            for c in done:
                self._finish(c, None)
            for c, _errno, message in failed:
                self._finish(c, OSError(message))
            if not queued:
                break

    def _finish(self, c: Any, error: Exception | None) -> None:
        self.multi.remove_handle(c)
        future, body = self.waiting.pop(c)
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result((c.getinfo(self.pycurl.RESPONSE_CODE), bytes(body)))
        self.free.append(c)

    async def close(self) -> None:
        for c in self.free:
            c.close()
        self.multi.close()


async def pycurl_multi(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    client = CurlMulti(base)
    return client.get, client.close


async def pyreqwest_client(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder().default_headers({"Authorization": f"Bearer {KEY}",
                                         "Accept": "application/json"})
        .http1_only().gzip(False).brotli(False).zstd(False).deflate(False)
        .follow_redirects(False).error_for_status(False).max_connections(LIMIT)
        .build()
    )  # fmt: skip
    origin = base.rstrip("/")

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        response = await client.get(origin + path_and_query(token_id, ref)).build().send()
        return response.status, bytes(await response.bytes())

    return get, client.close


async def h1_client(base: str) -> tuple[Get, Callable[[], Awaitable[None]]]:
    url = yarl.URL(base)
    assert url.host is not None
    assert url.port is not None
    pool = h1client.H1Pool(url.host, url.port, LIMIT, max_body_bytes=MAX_BODY)
    rest = (f" HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nAuthorization: Bearer {KEY}\r\n"
            "Accept: application/json\r\n\r\n").encode()  # fmt: skip

    async def get(token_id: str, ref: str) -> tuple[int, bytes]:
        async with asyncio.timeout(TIMEOUT_S):
            return await pool.request(b"GET " + path_and_query(token_id, ref).encode() + rest)

    return get, pool.close


CANDIDATES: dict[str, tuple[Callable[[str], Awaitable[tuple[Get, Any]]], str | None]] = {
    "piigate": (piigate_client, None),
    "http1": (http1_pool, None),
    "aiohttp": (aiohttp_today, None),
    "aiohttp-tuned": (aiohttp_tuned, None),
    "pycurl": (pycurl_multi, "pycurl"),
    "pyreqwest": (pyreqwest_client, "pyreqwest"),
    "h1": (h1_client, "httptools"),
}  # candidate -> (factory, module it needs)


@dataclass
class Result:
    candidate: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    client_cpu_us: float
    vault_cpu_us: float
    calls: int
    errors: int


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


async def drive(get: Get, tokens: list[str], concurrency: int, duration_s: float,
                max_calls: int) -> tuple[list[float], int]:  # fmt: skip
    """Closed loop until the deadline or the call budget: latencies (s) and errors."""
    latencies: list[float] = []
    errors = 0
    position = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors, position
        while position < max_calls and time.perf_counter() < deadline:
            token = tokens[position % len(tokens)]
            position += 1
            began = time.perf_counter()
            try:
                status, body = await get(token, os.urandom(16).hex())
                ok = status == 200 and body.startswith(b'[{"token_id"')
            except Exception:
                ok = False
            latencies.append(time.perf_counter() - began)
            errors += not ok

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


async def measure(name: str, base: str, vault_pid: int, tokens: list[str],
                  concurrency: int, args: argparse.Namespace) -> Result:  # fmt: skip
    get, close = await CANDIDATES[name][0](base)
    try:
        await drive(get, tokens, concurrency, args.warmup, args.max_calls)
        cpu, vault_cpu = _own_cpu(), vault_load.cpu_seconds(vault_pid) or 0.0
        began = time.perf_counter()
        latencies, errors = await drive(get, tokens, concurrency, args.duration, args.max_calls)
        elapsed = time.perf_counter() - began
        cpu, vault_cpu = _own_cpu() - cpu, (vault_load.cpu_seconds(vault_pid) or 0.0) - vault_cpu
    finally:
        await close()
    ordered = sorted(latencies)
    calls = max(len(latencies), 1)
    return Result(
        name, concurrency, len(latencies) / elapsed, percentile(ordered, 50) * 1000,
        percentile(ordered, 99) * 1000, cpu / calls * 1e6, vault_cpu / calls * 1e6,
        len(latencies), errors,
    )  # fmt: skip


def strictjson_cost(body: bytes, rounds: int = 2000) -> float:
    """µs to read one answer with piigate's strict JSON reader (the parse piigate does)."""
    began = time.process_time()
    for _ in range(rounds):
        strictjson.loads(body)
    return (time.process_time() - began) / rounds * 1e6


async def main_async(args: argparse.Namespace) -> int:
    notes = []
    chosen = []
    for name in args.candidate_list:
        module = CANDIDATES[name][1]
        if module is not None and importlib.util.find_spec(module) is None:
            notes.append(f"{name}: skipped, {module} is not installed (the bench extra)")
        else:
            chosen.append(name)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="piigate-vault-clients-") as tmp:
        process, api = await vault_load.start_vault(Path(tmp), not args.no_pin)
        base = api.removesuffix(vault_load.API)
        try:
            async with aiohttp.ClientSession(headers=vault_load.ADMIN) as http:
                tokens = await vault_load.seed(http, api, args.users, 16)
                params = [("reason", REASON), ("token_ids", tokens[0]), ("props", "user_id"),
                          ("props", "ssn.mask")]  # fmt: skip
                async with http.get(base + TOKENS_PATH, params=params) as response:
                    sample = await response.read()
            for concurrency in args.concurrency_levels:
                for name in chosen:
                    result = await measure(name, base, process.pid, tokens, concurrency, args)
                    results.append(result)
                    print(f"  {name:<14} {concurrency:>3} concurrent: {result.rate:8,.0f} req/s"
                          f"  client CPU {result.client_cpu_us:5.0f} µs/req  "
                          f"errors {result.errors}", flush=True)  # fmt: skip
        finally:
            process.terminate()
            await process.wait()
    print()
    print(_table(results))
    winners = []
    for concurrency in args.concurrency_levels:
        here = [r for r in results if r.concurrency == concurrency and not r.errors]
        if here:
            best = min(here, key=lambda r: r.client_cpu_us)
            winners.append(f"{concurrency} concurrent: least client CPU per request: "
                           f"{best.candidate} ({best.client_cpu_us:.0f} µs)")  # fmt: skip
    parse_us = strictjson_cost(sample)
    lines = [*winners, f"piigate's strict JSON read of one answer ({len(sample)} bytes): "
             f"{parse_us:.0f} µs (in `piigate`, not in the others)", *notes]  # fmt: skip
    print("\n".join(lines))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / f"vault-clients-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started": stamp, "settings": {
        k: v for k, v in vars(args).items() if k != "results"},
        "results": [asdict(r) for r in results], "notes": lines}, indent=2) + "\n")  # fmt: skip
    print(f"results in {out}")
    return 1 if any(r.errors for r in results) else 0


def _table(results: list[Result]) -> str:
    header = ("candidate", "concurrent", "req/s", "p50 ms", "p99 ms", "client CPU µs/req",
              "vault CPU µs/req", "errors")  # fmt: skip
    rows = [header] + [(r.candidate, str(r.concurrency), f"{r.rate:,.0f}", f"{r.p50_ms:.2f}",
                        f"{r.p99_ms:.2f}", f"{r.client_cpu_us:.0f}", f"{r.vault_cpu_us:.0f}",
                        str(r.errors)) for r in results]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |"
             for row in rows]  # fmt: skip
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured each")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--max-calls", type=int, default=200_000)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop",
                        help="piigate's default loop is uvloop")  # fmt: skip
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        args.concurrency_levels = [int(n) for n in args.concurrency.split(",")]
    except ValueError:
        parser.error("--concurrency: comma-separated integers")
    args.candidate_list = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if set(args.candidate_list) - set(CANDIDATES) or not args.candidate_list:
        parser.error(f"--candidates: choose from {', '.join(CANDIDATES)}")
    if not (0 < args.duration <= 60 and 0 <= args.warmup <= 10 and 1 <= args.users <= 20_000
            and all(1 <= n <= 256 for n in args.concurrency_levels)):  # fmt: skip
        parser.error("duration (0, 60], warmup [0, 10], users 1..20000, concurrency 1..256")
    if args.loop == "uvloop":
        import uvloop

        return uvloop.run(main_async(args))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
