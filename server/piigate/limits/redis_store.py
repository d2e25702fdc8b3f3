"""The shared store (`[state] backend = "redis"`): one Redis or Valkey primary that every
replica's abuse stage uses, one round trip per request that needs it.

- One script (`piigate.limits.script`) per request, by EVALSHA; when the server does not
  know it (first use, a restart, SCRIPT FLUSH) the same call is made once more by EVAL,
  which also caches it.
- Bounded: every call runs under the caller's budget (`timeout_s`) on top of the socket
  timeouts; redis-py's own retries are off, so a slow store costs one budget, not several.
  A connection interrupted by the budget is dropped, never reused half-read.
- Anything but a well-formed reply (a refused connection, a timeout, an error reply, a
  reply of the wrong shape) is a `StoreFailure` naming its kind; the abuse stage decides
  what each control does then. The pool reconnects by itself on the next call, so the
  store's return needs no restart.

Keys: `<prefix>rc:<profile>:<caller>`, `<prefix>rs:<profile>:<subject>`,
`<prefix>ds:<profile>:<caller>` and `<prefix>jti:<token>`, every part a keyed hash.
All four keys of one request live on one server: a Redis Cluster (keys spread over
slots) is not supported; use one primary with replicas (Sentinel or a managed service).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import InvalidResponse, NoScriptError, RedisError, ResponseError

from piigate.config.state import RedisConfig
from piigate.limits.health import StateHealth
from piigate.limits.script import SHA1, SOURCE
from piigate.limits.store import ADMITTED, Admission, StoreFailure, Verdict

_REFUSALS = {b"distinct": Verdict("distinct"), b"replayed": Verdict("replayed")}


class RedisStore:
    """Admissions decided by the script on a shared Redis."""

    def __init__(self, config: RedisConfig, health: StateHealth) -> None:
        self._prefix = config.key_prefix
        self._health = health
        pool = BlockingConnectionPool.from_url(
            config.url,
            max_connections=config.pool_size,
            timeout=config.command_timeout_s,  # waiting for a free connection
            socket_connect_timeout=config.connect_timeout_s,
            socket_timeout=config.command_timeout_s,
            username=config.username,
            password=config.password,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            driver_info=None,  # no CLIENT SETINFO on connect
            **({"ssl_ca_certs": str(config.ca_file)} if config.ca_file else {}),
        )
        self._redis = aioredis.Redis(connection_pool=pool)

    async def admit(self, admission: Admission, timeout_s: float) -> Verdict:
        keys, args = self._encode(admission)
        reply = await self._bounded(self._script(keys, args), timeout_s)
        try:
            verdict = _decode(reply)
        except StoreFailure as exc:
            raise self._failed(exc.kind) from None
        self._health.succeeded()
        return verdict

    async def ping(self, timeout_s: float) -> None:
        await self._bounded(self._redis.ping(), timeout_s)
        self._health.succeeded()

    async def aclose(self) -> None:
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()

    async def _bounded(self, call: Awaitable[object], timeout_s: float) -> object:
        """`call` within `timeout_s`, every failure a StoreFailure (and unhealthy)."""
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                return await call
        except TimeoutError:
            raise self._failed("timeout") from None
        except (RedisError, OSError) as exc:
            raise self._failed(_kind(exc)) from None

    def _failed(self, kind: str) -> StoreFailure:
        self._health.failed(kind)
        return StoreFailure(kind)

    async def _script(self, keys: Sequence[str], args: Sequence[str]) -> object:
        try:
            return await self._redis.evalsha(SHA1, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.eval(SOURCE, len(keys), *keys, *args)

    def _encode(self, a: Admission) -> tuple[list[str], list[str]]:
        p = self._prefix
        keys = [f"{p}rc:{a.profile_tag}:{a.caller}", f"{p}rs:{a.profile_tag}:{a.subject}",
                f"{p}ds:{a.profile_tag}:{a.caller}",
                f"{p}jti:{a.once.key}" if a.once else f"{p}jti:-"]
        lifetime_ms = 0
        if a.once is not None:
            lifetime_ms = max(1000, math.ceil((a.once.remember_until - a.now) * 1000))
        args = [
            repr(a.now),
            repr(a.caller_rate.per_s) if a.caller_rate else "0",
            str(a.caller_rate.burst) if a.caller_rate else "0",
            repr(a.subject_rate.per_s) if a.subject_rate else "0",
            str(a.subject_rate.burst) if a.subject_rate else "0",
            str(a.distinct.max_subjects) if a.distinct else "0",
            repr(a.distinct.window_s) if a.distinct else "0",
            a.subject,
            str(lifetime_ms),
        ]
        return keys, args


def _decode(reply: object) -> Verdict:
    """The script's reply, or StoreFailure("garbage") for anything it never sends."""
    if isinstance(reply, list) and reply and all(isinstance(x, bytes) for x in reply):
        head = reply[0]
        if head == b"ok" and len(reply) == 1:
            return ADMITTED
        if head in _REFUSALS and len(reply) == 1:
            return _REFUSALS[head]
        if head == b"rate" and len(reply) == 3 and reply[1] in (b"caller", b"subject"):
            try:
                wait = float(reply[2])
            except ValueError:
                wait = math.nan
            if math.isfinite(wait) and wait >= 0:
                return Verdict("caller" if reply[1] == b"caller" else "subject", wait)
    raise StoreFailure("garbage")


def _kind(exc: BaseException) -> str:
    """A fixed word for the failure: metric labels and logs never carry its message."""
    if isinstance(exc, InvalidResponse):
        return "garbage"
    if isinstance(exc, ResponseError):
        return "error_reply"
    if isinstance(exc, RedisError) and "Timeout" in type(exc).__name__:
        return "timeout"
    return "unreachable"
