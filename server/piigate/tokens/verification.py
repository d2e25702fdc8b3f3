"""JWT access-token verification: pure, no I/O, no clock reads (the caller passes `now`).

`verify(token, keys, policy, now)` runs these checks, in this order, and raises the first
failure as its own `TokenRejected` subclass:

 1. size                 len(token) <= policy.max_token_bytes          TokenTooLarge
 2. structure            ASCII, exactly three segments, strict base64url (no padding, no
                         whitespace, canonical), header and payload JSON objects, no
                         duplicate member names at any depth, no NaN/Infinity  TokenMalformed
 3. forbidden headers    crit, jku, x5u, jwk, x5c, b64 (RFC 8725 §3.10: keys and
                         processing rules never come from the token)   TokenHeaderForbidden
 4. algorithm            `alg` in the issuer's allowlist, and asymmetric; none and HS*
                         are refused whatever the list says (RFC 8725 §3.1, §2.1/§2.2)
                                                                       TokenAlgorithmNotAllowed
 5. key                  exact `kid` lookup (bounded length); no `kid` only when the set
                         holds exactly one key                         TokenKeyUnknown
 6. key binding          `alg` fits the key's type and curve and the JWK's own `alg`
                                                                       TokenAlgorithmNotAllowed
 7. signature            PyJWT's algorithm object for that alg         TokenSignatureInvalid
 8. issuer               `iss` == policy.issuer, byte for byte         TokenIssuerUnknown
 9. type                 the issuer's `typ` rule (RFC 9068 §4 and provider rules)
                                                                       TokenTypeInvalid
10. required claims      present                                       TokenClaimMissing
11. claim types          exp/iat/nbf finite JSON numbers in range; iss/sub/jti non-empty
                         strings; aud a string or an array of strings  TokenClaimInvalid
12. times                exp, nbf, iat (with leeway), lifetime cap, age cap
                         TokenExpired, TokenNotYetValid, TokenIssuedInFuture,
                         TokenLifetimeExcessive, TokenTooOld
13. audience             one of policy.audiences, when any are set     TokenAudienceInvalid

Steps 1-7 (structure and signature) live in `piigate.tokens.jws` as
`verify_signature(token, keys, algorithms)`, also callable alone; this module holds the
issuer's policy and steps 8-13, `check_claims(header, claims, policy, now)`, and `verify`,
which runs both.

Error metadata never holds token text or claim values: only claim and header names, the
`kid` when it is a short [A-Za-z0-9._-] string, the `alg` when it is a registered name,
and the issuer's configured name.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from piigate.errors import (
    TokenAudienceInvalid,
    TokenClaimInvalid,
    TokenClaimMissing,
    TokenExpired,
    TokenIssuedInFuture,
    TokenIssuerUnknown,
    TokenLifetimeExcessive,
    TokenNotYetValid,
    TokenRejected,
    TokenTooOld,
    TokenTypeInvalid,
)
from piigate.tokens.jws import DEFAULT_MAX_TOKEN_BYTES, freeze, verify_signature
from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, KeySet

MAX_LEEWAY_S = 60
DEFAULT_REQUIRED_CLAIMS = ("iss", "sub", "exp", "iat")
#: Claims every policy must require: no token without an issuer, a subject (ASVS 10.3.3
#: identifies the user by iss+sub) or an expiry is ever accepted.
ALWAYS_REQUIRED_CLAIMS = frozenset({"iss", "sub", "exp"})
#: 9999-12-31T23:59:59Z. A NumericDate beyond this is an attack or a bug (e.g. 1e300).
MAX_NUMERIC_DATE = 253_402_300_799

_NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
_STRING_CLAIMS = ("iss", "sub", "jti")


class TypRule(enum.Enum):
    """How an issuer marks an access token, so an ID token (or any other JWT signed by the
    same key) is never accepted as one."""

    #: RFC 9068 §4: header `typ` is `at+jwt` or `application/at+jwt` (case-insensitive).
    AT_JWT = "at+jwt"
    #: Header `typ` absent, `JWT` or `at+jwt`; a payload that calls itself an ID token
    #: (Keycloak `typ: ID`, Cognito `token_use: id`) is still refused.
    ANY = "any"
    #: Keycloak: payload `typ` is `Bearer` (ID tokens say `ID`); header `typ` as for ANY.
    KEYCLOAK = "keycloak"
    #: Amazon Cognito: payload `token_use` is `access` (ID tokens say `id`); header as ANY.
    COGNITO = "cognito"


_AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_GENERIC_TYPES = frozenset({"jwt", "application/jwt", *_AT_JWT_TYPES})


@dataclass(frozen=True, slots=True)
class IssuerPolicy:
    """How tokens of one configured issuer are verified. Validated on construction."""

    name: str
    issuer: str
    algorithms: tuple[str, ...]
    #: Empty: audience not checked here (a later stage may). Else `aud` must hold one.
    audiences: tuple[str, ...] = ()
    leeway_s: int = 30
    required_claims: tuple[str, ...] = DEFAULT_REQUIRED_CLAIMS
    max_lifetime_s: int | None = None
    max_age_s: int | None = None
    typ_rule: TypRule = TypRule.AT_JWT
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        if not self.name or not self.issuer:
            raise ValueError("issuer policy needs a name and an issuer")
        if not self.algorithms:
            raise ValueError("issuer policy needs at least one algorithm")
        refused = [alg for alg in self.algorithms if alg not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(f"algorithms not allowed (asymmetric only): {refused}")
        if isinstance(self.leeway_s, bool) or not 0 <= self.leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway_s must be 0..{MAX_LEEWAY_S}")
        missing = ALWAYS_REQUIRED_CLAIMS - set(self.required_claims)
        if missing:
            raise ValueError(f"required_claims must include {sorted(missing)}")
        for cap_name in ("max_lifetime_s", "max_age_s"):
            cap = getattr(self, cap_name)
            if cap is None:
                continue
            if isinstance(cap, bool) or cap <= 0:
                raise ValueError(f"{cap_name} must be positive")
            if "iat" not in self.required_claims:
                raise ValueError(f"{cap_name} needs 'iat' in required_claims")
        if any(not audience for audience in self.audiences):
            raise ValueError("audiences must be non-empty strings")
        if not 0 < self.max_token_bytes <= 64 * 1024:
            raise ValueError("max_token_bytes must be 1..65536")


@dataclass(frozen=True, slots=True)
class ClaimDates:
    """A token's NumericDate claims (`_NUMERIC_DATE_CLAIMS`, in that order), None when absent."""

    exp: float | None
    nbf: float | None
    iat: float | None


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature, issuer, type, times and audience have been verified.

    `header` and `claims` are read-only all the way down: JSON objects are read-only
    mappings and JSON arrays are tuples (the same instance may be shared between requests
    through the verified-token cache).
    """

    issuer_name: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    expires_at: float

    @property
    def issuer(self) -> str:
        """The `iss` claim (equal to the policy's issuer)."""
        return str(self.claims["iss"])

    @property
    def subject(self) -> str:
        """The `sub` claim (every policy requires it)."""
        return str(self.claims["sub"])

    @property
    def audiences(self) -> tuple[str, ...]:
        """The `aud` claim as a tuple; empty when the token has none."""
        aud = self.claims.get("aud")
        if isinstance(aud, str):
            return (aud,)
        return tuple(aud) if isinstance(aud, tuple) else ()

    @property
    def jti(self) -> str | None:
        """The `jti` claim, if present."""
        jti = self.claims.get("jti")
        return jti if isinstance(jti, str) else None


# --- claims (steps 8-13) -----------------------------------------------------------------
def _check_typ(header: Mapping[str, Any], claims: Mapping[str, Any], rule: TypRule) -> None:
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise TokenTypeInvalid()
    header_type = None if typ is None else typ.lower()
    if rule is TypRule.AT_JWT:
        valid = header_type in _AT_JWT_TYPES
    else:
        valid = header_type is None or header_type in _GENERIC_TYPES
        if rule is TypRule.KEYCLOAK:
            valid = valid and claims.get("typ") == "Bearer"
        elif rule is TypRule.COGNITO:
            valid = valid and claims.get("token_use") == "access"
        else:
            payload_typ = claims.get("typ")
            is_id_token = (
                isinstance(payload_typ, str) and payload_typ.lower() == "id"
            ) or claims.get("token_use") == "id"
            valid = valid and not is_id_token
    if not valid:
        raise TokenTypeInvalid()


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    # bool is an int in Python but not a JSON number; 1e400 parses to inf. The range is
    # checked before any float conversion: a huge JSON integer (10**400) is a Python int
    # that math.isfinite and float() refuse with OverflowError, and int comparisons are
    # exact at any size.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenClaimInvalid({"claim": name})
    if not 0 <= value <= MAX_NUMERIC_DATE:  # also false for NaN; inf is out of range
        raise TokenClaimInvalid({"claim": name})
    return float(value)


def _check_types(claims: Mapping[str, Any]) -> ClaimDates:
    for name in _STRING_CLAIMS:
        if name in claims and (not isinstance(claims[name], str) or not claims[name]):
            raise TokenClaimInvalid({"claim": name})
    if "aud" in claims:
        aud = claims["aud"]
        if not isinstance(aud, str) and not (
            isinstance(aud, tuple | list) and all(isinstance(item, str) for item in aud)
        ):
            raise TokenClaimInvalid({"claim": "aud"})
    return ClaimDates(*(_numeric_date(claims, name) for name in _NUMERIC_DATE_CLAIMS))


def _check_times(dates: ClaimDates, policy: IssuerPolicy, now: float) -> None:
    leeway = policy.leeway_s
    exp, nbf, iat = dates.exp, dates.nbf, dates.iat
    if exp is not None and now > exp + leeway:
        raise TokenExpired()
    if nbf is not None and now + leeway < nbf:
        raise TokenNotYetValid()
    if iat is not None and iat > now + leeway:
        raise TokenIssuedInFuture()
    max_lifetime = math.inf if policy.max_lifetime_s is None else policy.max_lifetime_s
    if exp is not None and iat is not None and exp - iat > max_lifetime:
        raise TokenLifetimeExcessive()
    if policy.max_age_s is not None and iat is not None and now - iat > policy.max_age_s:
        raise TokenTooOld()


def check_claims(
    header: Mapping[str, Any], claims: Mapping[str, Any], policy: IssuerPolicy, now: float
) -> VerifiedToken:
    """Steps 8-13 on an authenticated header and claims; `now` in seconds since the epoch."""
    return _check_frozen(freeze(header), freeze(claims), policy, now)


def claim_dates(token: VerifiedToken) -> ClaimDates:
    """The verified token's exp, nbf and iat (already checked to be well-typed)."""
    return _check_types(token.claims)


def check_times(dates: ClaimDates, policy: IssuerPolicy, now: float) -> None:
    """Step 12 alone: the only check whose verdict on a verified token changes over time
    (the verified-token cache re-runs it on every use)."""
    _check_times(dates, policy, now)


def _check_frozen(
    header: Mapping[str, Any], claims: Mapping[str, Any], policy: IssuerPolicy, now: float
) -> VerifiedToken:
    if "iss" not in claims:
        raise TokenClaimMissing({"claim": "iss"})
    if not isinstance(claims["iss"], str):
        raise TokenClaimInvalid({"claim": "iss"})
    # Exact comparison: "https://auth.example.com" is not "https://auth.example.com/".
    if claims["iss"] != policy.issuer:
        raise TokenIssuerUnknown()
    _check_typ(header, claims, policy.typ_rule)
    for name in policy.required_claims:
        if name not in claims:
            raise TokenClaimMissing({"claim": name})
    dates = _check_types(claims)
    _check_times(dates, policy, now)
    if policy.audiences:
        aud = claims.get("aud")
        token_audiences = (aud,) if isinstance(aud, str) else tuple(aud or ())
        if not any(audience in token_audiences for audience in policy.audiences):
            raise TokenAudienceInvalid()
    expires_at = dates.exp
    assert expires_at is not None  # "exp" is always required (IssuerPolicy)
    return VerifiedToken(
        issuer_name=policy.name, header=header, claims=claims, expires_at=expires_at
    )


def verify(token: str, keys: KeySet, policy: IssuerPolicy, now: float) -> VerifiedToken:
    """Verify an access token of `policy`'s issuer with `keys` at time `now` (steps 1-13).

    Every failure is a `TokenRejected` subclass carrying the issuer's configured name.
    """
    try:
        header, claims = verify_signature(
            token, keys, policy.algorithms, max_bytes=policy.max_token_bytes
        )
        return _check_frozen(header, claims, policy, now)  # verify_signature froze them
    except TokenRejected as exc:
        raise type(exc)({**exc.metadata, "issuer": policy.name}) from exc
