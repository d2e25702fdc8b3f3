"""Opaque access tokens: checked with their issuer's OAuth 2.0 Token Introspection
endpoint (RFC 7662), and then held to the same claim rules as a JWT.

`Introspector.verify(token)`, one per opaque issuer:

 1. syntax       at most the issuer's `max_token_bytes`, RFC 6750 §2.1 b64token characters
                 only (TokenTooLarge, TokenMalformed): nothing else is ever sent out;
 2. cache        an answer is remembered under the token's SHA-256 (never the token), until
                 the earlier of its `exp` and `introspection_cache_s` after it was fetched;
                 inactive answers too (for the bound), so a flood of dead tokens costs one
                 call each; bounded (LRU beyond `cache_size`); the rules below run again on
                 every use, so a hit never accepts what a fresh answer would refuse now;
 3. single flight concurrent verifications of one token share one introspection call;
 4. call         POST `token` and `token_type_hint=access_token`, form-encoded, with
                 piigate's own client authentication (`client_secret_basic`, or a fresh
                 RFC 7523 `private_key_jwt` assertion per call); no redirects, bounded by
                 `timeout_s` and a body cap; the endpoint is configured or discovered
                 (`introspection_endpoint` of the OpenID configuration, fetched once);
 5. the answer   (pure, `parse_answer` then `judge`):
       A1 a strict JSON object (`piigate.strictjson`) with `active` a JSON boolean;
       A2 `active: false` is TokenInactive (RFC 7662 §2.2 says nothing more, on purpose);
       A3 `token_type`, when present, is `Bearer` (any case) or RFC 8693's access-token
          URN: a refresh token answered as active is TokenTypeInvalid;
       A4 `client_id` and `username`, when present, are non-empty strings and `scope` a
          string (TokenClaimInvalid);
       A5 `iss`, when absent, is the configured issuer (the endpoint speaks for it alone);
          then `verification.check_claims` with an empty header, exactly as for a JWT:
          `iss` equal to the configured issuer, the `typ` rule on the members (no ID
          token; Keycloak `typ: Bearer`; Cognito `token_use: access`), required claims
          (`sub`, `exp`, `iat` by default: an answer without an `exp` is refused), claim
          types, times with leeway and the lifetime and age caps.
    The verified token has the issuer's name, an empty header and the answer's members
    (without `active`) as its claims, so the rest of the pipeline (audiences, scopes,
    the vault token claim, launch context, `jti` for one-time profiles) cannot tell it
    from a JWT's.

Endpoint faults fail closed as `IssuerKeysUnavailable` (ISSUER_KEYS_UNAVAILABLE, the
reason an unreachable JWT issuer gives, with `detail: introspection`): refused
connection, timeout, a status other than 200 (a redirect included), a body over the cap,
anything but an RFC 7662 object. The exact cause is logged with the issuer's name and a
fixed code, never the token or the answer. Failures are not cached.

The HTTP POST is `HttpIntrospectionPost`, passed in like the clock, so everything above
it is tested without a network. Hand-written rather than an OAuth library's resource
server (Authlib's, say): the claim rules must be the JWT path's own, the call bounded like
a JWKS fetch, and every failure one of piigate's reasons; the client authentication is
piigate-client's (`client_auth`), the same code a calling service uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import cachetools
import yarl

from piigate import strictjson
from piigate.errors import (
    IssuerKeysUnavailable,
    TokenClaimInvalid,
    TokenInactive,
    TokenMalformed,
    TokenRejected,
    TokenTooLarge,
    TokenTypeInvalid,
)
from piigate.tokens.discovery import DiscoveryFailed
from piigate.tokens.fetch import FetchFailed, check_jwks_uri, read_answer
from piigate.tokens.jwks import JwksStatus
from piigate.tokens.jws import freeze
from piigate.tokens.keys import KeySet
from piigate.tokens.verification import IssuerPolicy, VerifiedToken, check_claims
from piigate.transport.proxies import DIRECT, Proxies
from piigate_client.client_auth import ClientAuthentication

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 10_000
MAX_RESPONSE_BYTES = 64 * 1024
#: RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: A3: RFC 6749 §7.1's `Bearer` (compared in lower case) and RFC 8693 §3's identifier.
_ACCESS_TOKEN_TYPES = frozenset({"bearer", "urn:ietf:params:oauth:token-type:access_token"})
_NON_EMPTY_STRINGS = ("client_id", "username")


class IntrospectionFailed(Exception):
    """The endpoint could not be used; `detail` is a short fixed code for logs."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    """How one opaque issuer is introspected. Times in seconds."""

    client_id: str
    authentication: ClientAuthentication
    endpoint: str | None = None  # None: discovered
    assertion_audience: str | None = None  # private_key_jwt `aud`; None: the endpoint URL
    cache_s: float = 60.0
    cache_size: int = DEFAULT_CACHE_SIZE
    timeout_s: float = 3.0
    max_response_bytes: int = MAX_RESPONSE_BYTES
    token_prefix: str | None = None
    #: After a failed discovery, the next attempt waits this long (calls fail meanwhile).
    retry_after_failure_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.client_id:
            raise ValueError("introspection needs piigate's client id")
        if not (math.isfinite(self.cache_s) and self.cache_s >= 0):
            raise ValueError("cache_s must be finite and non-negative")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError("timeout_s must be positive")
        if self.cache_size <= 0 or self.max_response_bytes <= 0:
            raise ValueError("sizes must be positive")
        if self.endpoint is not None:
            check_jwks_uri(self.endpoint)  # https unless loopback, no credentials


@dataclass(frozen=True, slots=True)
class Answer:
    """An RFC 7662 answer that passed A1: `claims` are its other members, read-only."""

    active: bool
    claims: Mapping[str, Any]


# --- the answer (pure) -------------------------------------------------------------------
def check_token_syntax(token: object, max_bytes: int) -> str:
    """Step 1: the token, if it may be sent to the endpoint at all."""
    if not isinstance(token, str):
        raise TokenMalformed()
    if len(token) > max_bytes:
        raise TokenTooLarge()
    if not _B64TOKEN.fullmatch(token):
        raise TokenMalformed()
    return token


def token_digest(token: str) -> bytes:
    """The cache key: SHA-256 of the token's bytes (the JWT cache's key, too)."""
    return hashlib.sha256(token.encode("ascii")).digest()


def parse_answer(body: bytes) -> Answer:
    """A1: the answer's body, or IntrospectionFailed (an endpoint fault, not the token's)."""
    try:
        document = strictjson.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise IntrospectionFailed("not_json") from exc
    if not isinstance(document, dict):
        raise IntrospectionFailed("not_an_object")
    active = document.pop("active", None)
    if not isinstance(active, bool):
        raise IntrospectionFailed("no_active_boolean")
    return Answer(active, freeze(document))


def judge(answer: Answer, policy: IssuerPolicy, now: float) -> VerifiedToken:
    """A2-A5 at time `now`; every refusal a TokenRejected naming the issuer."""
    try:
        if not answer.active:
            raise TokenInactive()
        claims = answer.claims
        token_type = claims.get("token_type")
        if token_type is not None and (
            not isinstance(token_type, str) or token_type.lower() not in _ACCESS_TOKEN_TYPES
        ):
            raise TokenTypeInvalid()
        for name in _NON_EMPTY_STRINGS:
            if name in claims and (not isinstance(claims[name], str) or not claims[name]):
                raise TokenClaimInvalid({"claim": name})
        if "scope" in claims and not isinstance(claims["scope"], str):
            raise TokenClaimInvalid({"claim": "scope"})
        if "iss" not in claims:
            claims = {**claims, "iss": policy.issuer}
        return check_claims({}, claims, policy, now)
    except TokenRejected as exc:
        raise type(exc)({**exc.metadata, "issuer": policy.name}) from exc


def cached_until(answer: Answer, fetched_at: float, cache_s: float) -> float:
    """Step 2's bound: `cache_s` after the fetch, and never past an active answer's `exp`
    (a malformed `exp` leaves the bound; `judge` refuses such an answer on each use)."""
    until = fetched_at + cache_s
    exp = answer.claims.get("exp")
    if answer.active and isinstance(exp, int | float) and not isinstance(exp, bool):
        with contextlib.suppress(OverflowError):  # a huge JSON integer
            until = min(until, float(exp))
    return until


# --- the I/O edge ------------------------------------------------------------------------
class IntrospectionPost(Protocol):
    """POST a form, return the 200 answer's body, or raise IntrospectionFailed."""

    async def __call__(
        self, url: yarl.URL, headers: Mapping[str, str], form: Mapping[str, str],
        timeout_s: float, max_bytes: int,
    ) -> bytes: ...


class HttpIntrospectionPost:
    """The POST over aiohttp: connect, read and total timeouts (and an outer
    `asyncio.timeout`, so no call outlives `timeout_s`), the body cap, no redirects."""

    def __init__(self, session: aiohttp.ClientSession, proxies: Proxies = DIRECT) -> None:
        self._session = session
        self._proxies = proxies  # HTTPS_PROXY / NO_PROXY, read once (piigate.transport.proxies)

    async def __call__(
        self, url: yarl.URL, headers: Mapping[str, str], form: Mapping[str, str],
        timeout_s: float, max_bytes: int,
    ) -> bytes:
        client_timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(2.0, timeout_s), sock_read=timeout_s
        )
        try:
            async with asyncio.timeout(timeout_s):
                route = self._proxies.route(url)
                async with self._session.post(
                    url, data=dict(form), headers={**headers, **route.headers},
                    allow_redirects=False, timeout=client_timeout, proxy=route.proxy,
                    proxy_headers=route.proxy_headers,
                ) as response:
                    return await read_answer(response, max_bytes)
        except FetchFailed as exc:  # the same status and size rules as a key set's fetch
            raise IntrospectionFailed(exc.detail) from exc
        except TimeoutError as exc:
            raise IntrospectionFailed("timeout") from exc
        except aiohttp.ClientError as exc:
            raise IntrospectionFailed(f"client_{type(exc).__name__}") from exc


@dataclass(frozen=True, slots=True)
class _Cached:
    answer: Answer
    until: float


class Introspector:
    """One opaque issuer: verifies its tokens by introspection (steps 1-5 above)."""

    def __init__(
        self,
        policy: IssuerPolicy,
        settings: IntrospectionSettings,
        post: IntrospectionPost,
        clock: Callable[[], float],
        *,
        discover: Callable[[], Coroutine[Any, Any, str]] | None = None,
    ) -> None:
        """`discover` finds the endpoint when `settings.endpoint` is None."""
        if settings.endpoint is None and discover is None:
            raise ValueError("an introspection endpoint or a way to discover it is required")
        self.policy = policy
        self.settings = settings
        self._post = post
        self._clock = clock
        self._discover = discover
        self._url = None if settings.endpoint is None else yarl.URL(settings.endpoint)
        self._answers: cachetools.TLRUCache[bytes, _Cached] = cachetools.TLRUCache(
            maxsize=settings.cache_size, ttu=lambda _key, entry, _now: entry.until, timer=clock
        )
        self._inflight: dict[bytes, asyncio.Task[Answer]] = {}
        self._discovering: asyncio.Task[str] | None = None
        self._discovery_failed_at: float | None = None
        self._calls = 0
        self._last_error: str | None = None

    @property
    def prefix(self) -> str | None:
        """The configured `opaque_token_prefix`, if any."""
        return self.settings.token_prefix

    async def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        """The verified token, a TokenRejected, or IssuerKeysUnavailable. `digest` is
        `token_digest(token)` when the caller has it already."""
        try:
            check_token_syntax(token, self.policy.max_token_bytes)
        except TokenRejected as exc:
            raise type(exc)({**exc.metadata, "issuer": self.policy.name}) from exc
        key = digest if digest is not None else token_digest(token)
        cached = self._answers.get(key)
        answer = cached.answer if cached is not None else await self._shared(token, key)
        return judge(answer, self.policy, self._clock())

    def __len__(self) -> int:
        """How many answers are cached (for tests)."""
        return len(self._answers)

    # --- readiness: the `KeyStatusSource` shape -------------------------------------------
    async def prime(self) -> KeySet:
        """Ready once the endpoint is known (discovered, when not configured); introspection
        itself needs a token, so nothing more is probed."""
        try:
            await self._endpoint()
        except IntrospectionFailed as exc:
            raise self._unavailable() from exc
        return KeySet({}, fetched_at=self._clock())

    def status(self) -> JwksStatus:
        """For health and metrics: `fetches` counts introspection calls."""
        return JwksStatus(ready=self._url is not None, stale=False, age_s=None, key_count=0,
                          fetches=self._calls, last_error=self._last_error)

    async def settle(self) -> None:
        """Wait for the introspections in flight (tests)."""
        for task in list(self._inflight.values()):
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def aclose(self) -> None:
        tasks = [*self._inflight.values(), *([self._discovering] if self._discovering else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._inflight.clear()

    # --- internals ------------------------------------------------------------------------
    async def _shared(self, token: str, key: bytes) -> Answer:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._introspect(token, key))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        try:
            # shield: a caller that leaves (its deadline) must not cancel the others' call.
            return await asyncio.shield(task)
        except IntrospectionFailed as exc:
            raise self._unavailable() from exc

    def _settled(self, key: bytes, task: asyncio.Task[Answer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have left

    async def _introspect(self, token: str, key: bytes) -> Answer:
        self._calls += 1
        try:
            url = await self._endpoint()
            audience = self.settings.assertion_audience or str(url)
            headers, form = self.settings.authentication.authenticate(
                self.settings.client_id, audience
            )
            body = await self._post(
                url,
                {"Accept": "application/json", "Accept-Encoding": "identity", **headers},
                {"token": token, "token_type_hint": "access_token", **form},
                self.settings.timeout_s,
                self.settings.max_response_bytes,
            )
            answer = parse_answer(body)
        except IntrospectionFailed as exc:
            raise self._failed(exc.detail) from exc
        except Exception as exc:  # a shared task: anything else is a fault of the same kind
            raise self._failed(f"internal_{type(exc).__name__}") from exc
        self._last_error = None
        fetched_at = self._clock()
        if self.settings.cache_s > 0:
            self._answers[key] = _Cached(answer, cached_until(answer, fetched_at,
                                                              self.settings.cache_s))
        return answer

    async def _endpoint(self) -> yarl.URL:
        if self._url is not None:
            return self._url
        assert self._discover is not None  # __init__ insists on one of the two
        if self._discovering is None or self._discovering.done():
            failed_at = self._discovery_failed_at
            if failed_at is not None and (
                self._clock() - failed_at < self.settings.retry_after_failure_s
            ):
                raise IntrospectionFailed("discovery_backing_off")
            self._discovering = asyncio.get_running_loop().create_task(self._discover())
        try:
            endpoint = await asyncio.shield(self._discovering)
            url = check_jwks_uri(endpoint)
        except Exception as exc:  # any failure, typed or not, backs off the same way
            self._discovery_failed_at = self._clock()
            detail = exc.detail if isinstance(exc, DiscoveryFailed) else (
                f"internal_{type(exc).__name__}")
            self._last_error = f"discovery_{detail}"
            log.warning("introspection endpoint discovery failed issuer=%s error=%s",
                        self.policy.name, detail)
            raise IntrospectionFailed(f"discovery_{detail}") from exc
        self._url = url
        return url

    def _failed(self, detail: str) -> IntrospectionFailed:
        self._last_error = detail
        # Once per call (this runs in the shared task), never with the token or the answer.
        log.warning("token introspection failed issuer=%s error=%s", self.policy.name, detail)
        return IntrospectionFailed(detail)

    def _unavailable(self) -> IssuerKeysUnavailable:
        return IssuerKeysUnavailable({"issuer": self.policy.name, "detail": "introspection"})


class OpaqueRoutes:
    """Which opaque issuer a token goes to: the longest `opaque_token_prefix` it starts
    with; else, unless it looks like a JWT (three dot-separated segments) while JWT
    issuers are configured, the one opaque issuer without a prefix; else none (the token
    is then read as a JWT)."""

    def __init__(self, introspectors: Sequence[Introspector], *, jwt_issuers: bool) -> None:
        prefixed = [(i.prefix, i) for i in introspectors if i.prefix]
        self._prefixed = sorted(prefixed, key=lambda entry: -len(entry[0]))
        self._prefixes = tuple(prefix for prefix, _ in self._prefixed)
        unprefixed = [i for i in introspectors if not i.prefix]
        if len(unprefixed) > 1:
            raise ValueError("at most one opaque issuer may go without a token prefix")
        self._fallback = unprefixed[0] if unprefixed else None
        self._jwt_issuers = jwt_issuers

    def route(self, token: str) -> Introspector | None:
        """The introspector for `token`, or None for the JWT path."""
        if self._prefixes and token.startswith(self._prefixes):
            for prefix, introspector in self._prefixed:
                if token.startswith(prefix):
                    return introspector
        if self._fallback is None or (self._jwt_issuers and token.count(".") == 2):
            return None
        return self._fallback
