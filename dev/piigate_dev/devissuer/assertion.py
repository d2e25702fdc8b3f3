"""`private_key_jwt` client authentication: the client's signed assertion (RFC 7523 §2.2,
checked as §3 says; the form SMART Backend Services use).

Pure but for the replay memory, which is passed in. Rules, in the order they are checked
(every failure is the same `invalid_client`, RFC 7521 §4.2.1, with a description that
names the rule and never echoes the assertion):

1. At most 8 KiB; a compact JWS whose header names an allowed asymmetric `alg`
   (RS256/RS384/ES256/ES384) and, when the client registered several keys, its `kid`.
2. `iss` and `sub` are both the client's id (§3 items 1-2) and name a client that
   registered public keys; a `client_id` parameter, if sent, is the same id.
3. The signature verifies with that registered key.
4. `aud` holds this token endpoint's URL or the issuer identifier (§3 item 3).
5. `exp` is present and not past (30 s leeway), at most 5 minutes ahead (SMART's bound),
   and `nbf`/`iat`, when present, are not in the future (§3 items 4-6).
6. `jti` is present and this client has not used it before its `exp` (§3 item 7):
   an assertion is good for one token request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError

from piigate_dev.devissuer.config import ClientConfig, IssuerConfig

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
MAX_ASSERTION_BYTES = 8 * 1024
MAX_AHEAD_S = 300
LEEWAY_S = 30


class AssertionRejected(Exception):
    """The assertion broke a rule; the message names the rule, never the token."""


class AssertionReplay:
    """The `jti`s seen per client, each until its assertion's `exp`. Bounded: when full of
    unexpired ids it refuses new assertions rather than forgetting (refusing beats replay)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._seen: dict[tuple[str, str], float] = {}

    def remember(self, client_id: str, jti: str, exp: float, now: float) -> None:
        """Record the id; raise AssertionRejected if it was seen (or the memory is full)."""
        self._seen = {key: until for key, until in self._seen.items() if until + LEEWAY_S > now}
        if (client_id, jti) in self._seen:
            raise AssertionRejected("the assertion's jti was used before")
        if len(self._seen) >= self._capacity:
            raise AssertionRejected("too many unexpired assertions to remember another")
        self._seen[(client_id, jti)] = exp


@dataclass(frozen=True)
class AssertionCheck:
    """What an assertion is checked against: the audiences this endpoint answers to, the
    time, and the replay memory."""

    audiences: frozenset[str]
    now: float
    replay: AssertionReplay = field(repr=False)


def verify_client_assertion(
    assertion: str, client_id: str | None, config: IssuerConfig, check: AssertionCheck
) -> ClientConfig:
    """The client the assertion authenticates; raise AssertionRejected."""
    if len(assertion) > MAX_ASSERTION_BYTES:
        raise AssertionRejected("the assertion is too large")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except InvalidTokenError as exc:
        raise AssertionRejected("the assertion is not a JWT") from exc
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AssertionRejected(f"the assertion's alg must be one of {', '.join(ALGORITHMS)}")
    issuer, subject = unverified.get("iss"), unverified.get("sub")
    if not isinstance(issuer, str) or issuer != subject:
        raise AssertionRejected("the assertion's iss and sub must both be the client id")
    if client_id is not None and client_id != issuer:
        raise AssertionRejected("client_id differs from the assertion's iss")
    client = config.client(issuer)
    if client is None or not client.public_jwks:
        raise AssertionRejected("no client registered public keys under this id")
    claims = _verified_claims(assertion, alg, _key(client, header.get("kid")), check)
    check.replay.remember(client.client_id, claims["jti"], float(claims["exp"]), check.now)
    return client


def _key(client: ClientConfig, kid: object) -> jwt.PyJWK:
    candidates = [json.loads(text) for text in client.public_jwks]
    if kid is not None:
        candidates = [jwk for jwk in candidates if jwk.get("kid") == kid]
    if len(candidates) != 1:
        raise AssertionRejected("the assertion's kid names none of the client's keys")
    try:
        return jwt.PyJWK(candidates[0])
    except PyJWKError as exc:  # checked at load; a key that stops parsing is refused
        raise AssertionRejected("the client's registered key is unusable") from exc


def _verified_claims(
    assertion: str, alg: str, key: jwt.PyJWK, check: AssertionCheck
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion, key, algorithms=[alg], audience=sorted(check.audiences),
            # Times are checked below against the check's clock, not PyJWT's own.
            options={
                "require": ["iss", "sub", "aud", "exp", "jti"],
                "verify_exp": False, "verify_nbf": False, "verify_iat": False,
            },
        )
    except InvalidTokenError as exc:
        raise AssertionRejected(f"the assertion failed verification: {_rule(exc)}") from exc
    exp, jti = claims["exp"], claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise AssertionRejected("the assertion's jti must be a non-empty string")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise AssertionRejected("the assertion's exp must be a number")
    if exp + LEEWAY_S <= check.now:
        raise AssertionRejected("the assertion has expired")
    if exp > check.now + MAX_AHEAD_S + LEEWAY_S:
        raise AssertionRejected(f"the assertion's exp is more than {MAX_AHEAD_S} s ahead")
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if isinstance(value, int | float) and value > check.now + LEEWAY_S:
            raise AssertionRejected(f"the assertion's {claim} is in the future")
    return claims


def _rule(exc: InvalidTokenError) -> str:
    """The failed check's name (PyJWT's class), not its message: no claim value leaks."""
    return type(exc).__name__
