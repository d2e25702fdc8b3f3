"""The benchmark's fixed stack: child processes, the local vault, the dev issuer, seeding.

Every server runs as its own child process on 127.0.0.1 with port 0 and announces itself
with one `listening on ADDRESS` line on stdout (the convention of every `piigate`
subcommand); its stderr goes to a file in the work folder, shown if it fails to start.

The vault and the issuer are started once and shared by every server under test, so each
gateway talks to the same vault with the same data. Users are seeded the way production
does it, through `piigate_dev.devissuer.migration.migrate_user` (record into the vault, a
pointer token bound to the user, an access token carrying only the vault token id).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from piigate_dev import demo
from piigate_dev.devissuer.migration import VaultTarget, migrate_user
from piigate_dev.devissuer.remote import RemoteIssuer

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# CPU 0 belongs to the server under test; everything else (vault, issuer, load generator,
# this process) shares CPU 1, so the server is measured on a core of its own.
SERVER_CPU = 0
HELPER_CPU = 1
FHIR_SCOPE = "openid launch/patient patient/Patient.read"
# The two demo profiles: the caller that uses each, and the audience its users' tokens name.
CALLER_FOR_AUDIENCE = {demo.FHIR_AUDIENCE: "fhir-app", demo.SUPPORT_AUDIENCE: "support-tool"}


REPO = Path(__file__).resolve().parents[1]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, plus the repository on PYTHONPATH so that
    `python -m bench.*` works whatever the child's working folder."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of process `pid`, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int | None) -> None:
    """Restrict `pid` to one CPU; a no-op without a CPU, off Linux, or on one core."""
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return
    os.sched_setaffinity(pid, {cpu})


@dataclass
class Child:
    """A started child process and the address it announced."""

    name: str
    process: subprocess.Popen[str]
    address: str
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, wait (bounded), then SIGKILL: a child never outlives the benchmark."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_child(
    name: str,
    argv: Sequence[str],
    work: Path,
    *,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
) -> Child:
    """Run `python ARGV` and wait (bounded) for its `listening on` line."""
    stderr_path = work / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=work, env=child_env(env),
        )  # fmt: skip
    pin(process.pid, cpu)
    found: list[str] = []

    def read_first_line() -> None:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.startswith("listening on "):
            found.append(line.removeprefix("listening on ").strip())

    # A thread, because readline() has no timeout and a broken child may never print.
    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not found:
        exited = process.poll()
        process.kill()
        process.wait()
        detail = stderr_path.read_text(errors="replace")[-3000:]
        why = f"exit status {exited}" if exited is not None else f"silent {START_TIMEOUT_S:.0f} s"
        raise RuntimeError(f"{name} did not start ({why}):\n{detail}")
    return Child(name, process, found[0], stderr_path)


@dataclass(frozen=True)
class SubjectToken:
    """One end user's access token and the caller (profile) that presents it."""

    caller: str  # fhir-app (smart_on_fhir, raw) or support-tool (support, masked)
    token: str
    user: int  # the seeded person's number (see `person`), to check answers


@dataclass
class Stack:
    """The shared vault and issuer, the seeded users and every token the load will use."""

    work: Path
    secrets: demo.Secrets
    vault: Child
    issuer: Child
    iss: str  # the `iss` claim value (the issuer's base URL with a trailing slash)
    vault_audit: Path
    token_ids: list[str] = field(default_factory=list)
    caller_tokens: dict[str, str] = field(default_factory=dict)
    helper_cpu: int | None = HELPER_CPU
    _redis: subprocess.Popen[bytes] | None = None
    _redis_port: int = 0
    proxy: Child | None = None  # bench.delay_proxy in front of the vault, once asked for
    remote_delay_ms: float = 1.0  # per direction: 2 ms per round trip

    def redis_url(self) -> str:
        """A real redis-server on loopback (beside the vault), started on first use."""
        if self._redis is None:
            self._redis_port, self._redis = start_redis(self.work, self.helper_cpu)
        return f"redis://127.0.0.1:{self._redis_port}/0"

    def delay_proxy_url(self) -> str:
        """The vault behind `bench.delay_proxy` (a remote vault), started on first use on
        the helpers' core."""
        if self.proxy is None:
            argv = ["-m", "bench.delay_proxy", "--upstream", self.vault_url,
                    "--delay-ms", str(self.remote_delay_ms)]  # fmt: skip
            self.proxy = start_child("delay-proxy", argv, self.work, cpu=self.helper_cpu)
        return self.proxy.address

    @property
    def vault_url(self) -> str:
        return self.vault.address

    @property
    def issuer_url(self) -> str:
        return self.issuer.address

    def stop(self) -> None:
        for child in (self.proxy, self.issuer, self.vault):
            if child is not None:
                child.stop()
        if self._redis is not None:
            self._redis.terminate()
            try:
                self._redis.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._redis.kill()
                self._redis.wait()


def start_redis(work: Path, cpu: int | None) -> tuple[int, subprocess.Popen[bytes]]:
    """Debian's redis-server on a free loopback port, no persistence; waits (bounded)
    until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make redis-server`")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pin(process.pid, cpu)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return port, process
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError("redis-server did not answer within the start timeout")


def start_stack(work: Path, *, pin_cpus: bool) -> Stack:
    """Start the local vault (audit log to a file, counted per run) and the dev issuer."""
    secrets = demo.Secrets.generate()
    (work / "vault.toml").write_text(demo.vault_config(secrets))
    (work / "issuer.toml").write_text(demo.issuer_config(secrets))
    audit = work / "vault-audit.jsonl"
    cpu = HELPER_CPU if pin_cpus else None
    vault = start_child(
        "vault",
        ["-m", "piigate_dev", "local-vault", "--listen", "127.0.0.1:0",
         "--config", "vault.toml", "--audit", audit.name],
        work, cpu=cpu,
    )  # fmt: skip
    try:
        issuer = start_child(
            "issuer",
            ["-m", "piigate_dev", "dev-issuer", "--listen", "127.0.0.1:0",
             "--config", "issuer.toml"],
            work, cpu=cpu,
        )  # fmt: skip
    except BaseException:
        vault.stop()
        raise
    # With port 0 the issuer names itself after the origin it is reached at (Auth0 style).
    iss = issuer.address.rstrip("/") + "/"
    return Stack(work, secrets, vault, issuer, iss, audit, helper_cpu=cpu)


def person(n: int) -> dict[str, str]:
    """A fictional record; distinct and well-formed for every n."""
    return {
        "user_id": f"u-bench-{n:06d}",
        "ssn": f"{n % 899 + 100:03d}-{n % 89 + 10:02d}-{n % 10000:04d}",
        "email": f"user{n}@example.test",
    }


async def seed_users(stack: Stack, users: int, concurrency: int = 16) -> list[SubjectToken]:
    """Migrate `users` people into the vault; their FHIR-audience tokens, in user order."""
    target = VaultTarget(stack.vault_url, stack.secrets.vault_admin, "users")
    token_ids: list[str | None] = [None] * users
    tokens: list[SubjectToken | None] = [None] * users
    numbers = iter(range(users))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        # One RemoteIssuer: it reads the discovery document once, not once per user.
        issuer = RemoteIssuer(http, stack.issuer_url)

        async def migrate_some() -> None:
            for n in numbers:  # shared iterator: `users` migrations in total
                migrated = await migrate_user(
                    http, target, issuer, person(n), subject=f"auth0|bench-{n}",
                    audience=demo.FHIR_AUDIENCE, scope=FHIR_SCOPE, azp="fhir-app",
                )  # fmt: skip
                token_ids[n] = migrated.token_id
                tokens[n] = SubjectToken("fhir-app", migrated.access_token, n)

        await asyncio.gather(*(migrate_some() for _ in range(concurrency)))
    stack.token_ids = [t for t in token_ids if t is not None]
    return [t for t in tokens if t is not None]


async def mint_user_tokens(
    stack: Stack, wanted: Sequence[tuple[int, str]], concurrency: int = 16
) -> list[SubjectToken]:
    """A fresh access token (a new `jti`: another login) per (user number, audience)."""
    out: list[SubjectToken | None] = [None] * len(wanted)
    jobs = iter(enumerate(wanted))
    url = stack.issuer_url.rstrip("/") + "/dev/users/token"
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def mint_some() -> None:
            for index, (n, audience) in jobs:
                body = {
                    "sub": f"auth0|bench-{n}",
                    "pii_token": stack.token_ids[n],
                    "audience": audience,
                    "scope": FHIR_SCOPE if audience == demo.FHIR_AUDIENCE else "openid",
                    "azp": CALLER_FOR_AUDIENCE[audience],
                }
                async with http.post(url, json=body) as response:
                    response.raise_for_status()
                    token = (await response.json())["access_token"]
                out[index] = SubjectToken(CALLER_FOR_AUDIENCE[audience], token, n)

        await asyncio.gather(*(mint_some() for _ in range(concurrency)))
    return [t for t in out if t is not None]


async def mint_caller_tokens(stack: Stack) -> dict[str, str]:
    """One client-credentials token per calling service, as a service caches it."""
    url = stack.issuer_url.rstrip("/") + "/oauth/token"
    tokens: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for client in CALLER_FOR_AUDIENCE.values():
            form = {
                "grant_type": "client_credentials",
                "client_id": client,
                "client_secret": stack.secrets.clients[client],
                "audience": "piigate",
            }
            async with http.post(url, data=form) as response:
                response.raise_for_status()
                tokens[client] = (await response.json())["access_token"]
    stack.caller_tokens = tokens
    return tokens
