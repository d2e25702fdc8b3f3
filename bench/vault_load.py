"""Load test for the local vault's detokenize call (the call the gateway makes).

    .venv/bin/python -m bench.vault_load [--users 1000] [--concurrency 16] [--duration 5]
                                         [--max-calls 100000] [--batch 1] [--pin]

Starts `piigate-dev local-vault` as its own process on 127.0.0.1:0 (in memory, audit log to a
temporary file), seeds N users and a pointer token each, then drives
`GET .../tokens?token_ids=..&props=..` from this process with an aiohttp client, C
requests in flight, until the duration or the call budget runs out. Prints requests/s,
p50/p99 latency and the vault process's CPU time per request. Loopback only; every loop
is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

API = "/api/pvlt/1.0"
ADMIN = {"Authorization": "Bearer pvaultauth"}  # the dev instance's admin key
STARTUP_TIMEOUT_S = 20
WARMUP_S = 0.5
CONFIG = """
[[collections]]
name = "users"
type = "PERSONS"
properties = [
  { name = "user_id", data_type_name = "STRING", is_unique = true },
  { name = "ssn", data_type_name = "SSN" },
  { name = "email", data_type_name = "EMAIL" },
]
"""


def cpu_seconds(pid: int) -> float | None:
    """User+system CPU time of `pid` (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_vault(work: Path, pin: bool) -> tuple[asyncio.subprocess.Process, str]:
    (work / "vault.toml").write_text(CONFIG)
    stderr = (work / "vault.stderr").open("wb")  # kept out of the report, shown on failure
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate_dev", "local-vault", "--listen", "127.0.0.1:0",
        "--config", str(work / "vault.toml"), "--audit", str(work / "audit.jsonl"),
        stdout=asyncio.subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    stderr.close()
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)).decode()
    except TimeoutError:
        line = ""
    match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
    if not match:
        process.kill()
        await process.wait()
        detail = (work / "vault.stderr").read_text(errors="replace")[-2000:]
        raise SystemExit(f"the vault did not start: {line!r}\n{detail}")
    if pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(process.pid, {0})
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    return process, match.group(1) + API


async def seed(http: aiohttp.ClientSession, api: str, users: int, concurrency: int) -> list[str]:
    """Store `users` objects and one pointer token each; the token ids."""
    base = f"{api}/data/collections/users"
    params = {"reason": "AccountManagement"}
    object_ids: list[str] = []
    numbers = iter(range(users))

    async def store_some() -> None:
        for n in numbers:  # shared iterator: bounded by `users` in total
            user = {"user_id": f"user-{n}", "ssn": f"{n % 900 + 100:03d}-12-{n % 10000:04d}",
                    "email": f"user{n}@example.test"}  # fmt: skip
            async with http.post(f"{base}/objects", params=params, json=user) as response:
                response.raise_for_status()
                object_ids.append((await response.json())["id"])

    await asyncio.gather(*(store_some() for _ in range(concurrency)))
    tokens: list[str] = []
    for start in range(0, len(object_ids), 500):
        body = [
            {"type": "pointer", "object": {"id": oid}} for oid in object_ids[start : start + 500]
        ]
        async with http.post(f"{base}/tokens", params=params, json=body) as response:
            response.raise_for_status()
            tokens += [entry["token_id"] for entry in await response.json()]
    return tokens


async def drive(
    http: aiohttp.ClientSession, api: str, tokens: list[str], args: argparse.Namespace
) -> tuple[list[float], int, float]:
    """Detokenize until the deadline or the call budget; latencies (s), errors, elapsed."""
    url = f"{api}/data/collections/users/tokens"
    latencies: list[float] = []
    errors = 0
    budget = args.max_calls
    rng = random.Random(7)
    deadline = time.perf_counter() + args.duration

    async def worker() -> None:
        nonlocal budget, errors
        while budget > 0 and time.perf_counter() < deadline:
            budget -= 1
            params = [("reason", "AppFunctionality"), ("props", "user_id"), ("props", "ssn.mask")]
            params += [("token_ids", rng.choice(tokens)) for _ in range(args.batch)]
            began = time.perf_counter()
            async with http.get(url, params=params) as response:
                body = await response.read()
                if response.status != 200 or not body.startswith(b'[{"token_id"'):
                    errors += 1
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return latencies, errors, time.perf_counter() - began


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        process, api = await start_vault(Path(tmp), args.pin)
        try:
            connector = aiohttp.TCPConnector(limit=args.concurrency)
            async with aiohttp.ClientSession(headers=ADMIN, connector=connector) as http:
                tokens = await seed(http, api, args.users, args.concurrency)
                warmup = argparse.Namespace(**{**vars(args), "duration": WARMUP_S})
                await drive(http, api, tokens, warmup)
                cpu_before = cpu_seconds(process.pid)
                latencies, errors, elapsed = await drive(http, api, tokens, args)
                cpu_after = cpu_seconds(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
    calls = len(latencies)
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"vault detokenize: {args.users} users, batch {args.batch}, "
          f"{args.concurrency} in flight, {elapsed:.1f} s")  # fmt: skip
    print(f"  requests/s  {calls / elapsed:,.0f}   ({calls} calls, {errors} errors)")
    print(f"  latency ms  p50 {quantiles[49] * 1000:.2f}   p99 {quantiles[98] * 1000:.2f}")
    if cpu_before is not None and cpu_after is not None:
        print(f"  vault CPU   {(cpu_after - cpu_before) / calls * 1e6:.0f} µs/request")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measured load")
    parser.add_argument("--max-calls", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1, help="token ids per detokenize call")
    parser.add_argument("--pin", action="store_true", help="vault on CPU 0, client on CPU 1")
    args = parser.parse_args()
    if not (
        1 <= args.users <= 100_000 and 1 <= args.concurrency <= 256 and 0 < args.duration <= 60
    ):
        parser.error("users 1..100000, concurrency 1..256, duration up to 60 s")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
