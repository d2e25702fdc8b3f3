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
- Timed: each call's duration, operation (admit, ping) and outcome (ok, or the failure's
  kind) go to `observe` (the metric `piigate_state_store_request_duration_seconds`).

Keys: `<prefix>rc:<profile>:<caller>`, `<prefix>rs:<profile>:<subject>`,
`<prefix>ds:<profile>:<caller>`, `<prefix>jti:<token>`, and for calls with an actor
`<prefix>ra:<profile>:<actor>` and `<prefix>da:<profile>:<actor>`, every part a keyed
hash. All the keys of one request live on one server: a Redis Cluster (keys spread over
slots) is not supported; use one primary with replicas (Sentinel or a managed service).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import InvalidResponse, NoScriptError, RedisError, ResponseError

from piigate.config.state import RedisConfig
from piigate.limits.health import StateHealth
from piigate.limits.script import SHA1, SOURCE
from piigate.limits.store import ADMITTED, Admission, StoreFailure, Verdict

_REFUSALS = {b"distinct": Verdict("distinct"), b"actor_distinct": Verdict("actor_distinct"),
             b"replayed": Verdict("replayed")}
_RATE_LIMITS: dict[bytes, Literal["caller", "subject", "actor"]] = {
    b"caller": "caller", b"subject": "subject", b"actor": "actor"}
#: `(operation, outcome, seconds)` of one store call.
StoreObserver = Callable[[str, str, float], None]


def _unobserved(_operation: str, _outcome: str, _seconds: float) -> None:
    return None


class RedisStore:
    """Admissions decided by the script on a shared Redis."""

    def __init__(self, config: RedisConfig, health: StateHealth,
                 observe: StoreObserver | None = None) -> None:
        self._prefix = config.key_prefix
        self._health = health
        self._observe = observe or _unobserved
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
        started = time.perf_counter()
        try:
            reply = await self._bounded(self._script(keys, args), timeout_s)
            try:
                verdict = _decode(reply)
            except StoreFailure as exc:
                raise self._failed(exc.kind) from None
        except StoreFailure as exc:
            self._observe("admit", exc.kind, time.perf_counter() - started)
            raise
        self._observe("admit", "ok", time.perf_counter() - started)
        self._health.succeeded()
        return verdict

    async def ping(self, timeout_s: float) -> None:
        started = time.perf_counter()
        try:
            await self._bounded(self._redis.ping(), timeout_s)
        except StoreFailure as exc:
            self._observe("ping", exc.kind, time.perf_counter() - started)
            raise
        self._observe("ping", "ok", time.perf_counter() - started)
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
                f"{p}jti:{a.once.key}" if a.once else f"{p}jti:-",
                f"{p}ra:{a.profile_tag}:{a.actor or '-'}",
                f"{p}da:{a.profile_tag}:{a.actor or '-'}"]
        # Actor limits apply only to a call with an actor.
        actor_rate = a.actor_rate if a.actor is not None else None
        actor_distinct = a.actor_distinct if a.actor is not None else None
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
            repr(actor_rate.per_s) if actor_rate else "0",
            str(actor_rate.burst) if actor_rate else "0",
            str(actor_distinct.max_subjects) if actor_distinct else "0",
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
        if head == b"rate" and len(reply) == 3 and reply[1] in _RATE_LIMITS:
            try:
                wait = float(reply[2])
            except ValueError:
                wait = math.nan
            if math.isfinite(wait) and wait >= 0:
                return Verdict(_RATE_LIMITS[reply[1]], wait)
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
