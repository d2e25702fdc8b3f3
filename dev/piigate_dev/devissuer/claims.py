"""Pure token building: the claims and JOSE header of a token, from inputs and a clock reading.

No I/O, no randomness, no keys: the caller passes `now` (seconds since the epoch), the
`jti` and the signing key's `kid`/`alg`. The shapes follow what Auth0 issues:

- client credentials (RFC 6749 §4.4), like an Auth0 machine-to-machine token:
  `iss, sub = CLIENT_ID@clients, aud, azp, client_id, gty = client-credentials, scope,
  iat, exp, jti`;
- an end user's access token after login, with what an Auth0 Action adds: the namespaced
  vault-token claim (one opaque key such as `https://example.com/pii_token`, never a
  dotted path), `sub, aud, azp, scope, iat, exp, jti`;
- the same shape for the people who act for others (`extra_claims`): a support agent's
  token with Auth0's RBAC `permissions` array (and `acr`, `auth_time`), and a SMART
  practitioner's token with `user/` scopes and the launch context's `patient` and
  `fhirUser` claims.

Both carry header `typ: at+jwt` (RFC 9068 §2.1) unless a user token asks for `JWT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = ("at+jwt", "JWT")

# Claims the issuer sets itself; `claims` in a user-token request may add others, never these
# (use the dedicated request fields instead, so a token's shape stays what the fields say).
RESERVED = frozenset({"iss", "sub", "aud", "azp", "scope", "iat", "exp", "nbf", "jti"})

MAX_OFFSET_S = 10 * 365 * 86400


@dataclass(frozen=True)
class TokenParts:
    """An unsigned token: the JOSE header and the claims set."""

    header: dict[str, Any]
    claims: dict[str, Any]


@dataclass(frozen=True)
class UserTokenRequest:
    """What a simulated login produces (the body of `POST /dev/users/token`).

    `audience=None` leaves `aud` out; `pii_token=None` leaves the pii claim out; `scope` and
    `azp` likewise. `lifetime_s=None` uses the issuer's default. `iat_offset_s` issues the
    token as if at now+offset (negative and larger than the lifetime: already expired).
    """

    sub: str
    pii_token: str | None = None
    audience: str | tuple[str, ...] | None = None
    scope: str | None = None
    azp: str | None = None
    lifetime_s: int | None = None
    typ: str = "at+jwt"
    claims: Mapping[str, Any] = field(default_factory=dict)
    iat_offset_s: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON body for `POST /dev/users/token` (unset optional fields left out)."""
        body: dict[str, Any] = {"sub": self.sub, "typ": self.typ}
        optional = {
            "pii_token": self.pii_token,
            "audience": list(self.audience) if isinstance(self.audience, tuple) else self.audience,
            "scope": self.scope,
            "azp": self.azp,
            "lifetime_s": self.lifetime_s,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if self.claims:
            body["claims"] = dict(self.claims)
        if self.iat_offset_s:
            body["iat_offset_s"] = self.iat_offset_s
        return body


def extra_claims(
    *,
    patient: str | None = None,
    fhir_user: str | None = None,
    permissions: tuple[str, ...] = (),
    acr: str | None = None,
    auth_time: int | None = None,
) -> dict[str, Any]:
    """The `claims` of a user-token request for an agent or a practitioner: SMART launch
    context (`patient`, `fhirUser`), Auth0-style RBAC `permissions`, and the login's
    `acr` and `auth_time`; unset ones are left out."""
    claims: dict[str, Any] = {}
    if patient is not None:
        claims["patient"] = patient
    if fhir_user is not None:
        claims["fhirUser"] = fhir_user
    if permissions:
        claims["permissions"] = list(permissions)
    if acr is not None:
        claims["acr"] = acr
    if auth_time is not None:
        claims["auth_time"] = auth_time
    return claims


class RequestRejected(ValueError):
    """A user-token request is invalid; the message names the field, never its value."""


def parse_user_token_request(body: object, max_lifetime_s: int) -> UserTokenRequest:
    """Validate a decoded JSON body into a UserTokenRequest; raise RequestRejected."""
    if not isinstance(body, dict):
        raise RequestRejected("the body must be a JSON object")
    known = {
        "sub", "pii_token", "audience", "scope", "azp", "lifetime_s", "typ", "claims",
        "iat_offset_s",
    }  # fmt: skip
    unknown = sorted(set(body) - known)
    if unknown:
        raise RequestRejected(f"unknown field(s): {', '.join(unknown)}")
    sub = body.get("sub")
    if not isinstance(sub, str) or not sub:
        raise RequestRejected("sub must be a non-empty string")
    audience = body.get("audience")
    if isinstance(audience, list):
        if not audience or not all(isinstance(a, str) and a for a in audience):
            raise RequestRejected("audience must be a string or a non-empty list of strings")
        audience = tuple(audience)
    elif audience is not None and not (isinstance(audience, str) and audience):
        raise RequestRejected("audience must be a string or a non-empty list of strings")
    for name in ("pii_token", "scope", "azp"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise RequestRejected(f"{name} must be a string")
    lifetime = body.get("lifetime_s")
    if lifetime is not None and not _int_in(lifetime, 1, max_lifetime_s):
        raise RequestRejected(f"lifetime_s must be an integer from 1 to {max_lifetime_s}")
    offset = body.get("iat_offset_s", 0)
    if not _int_in(offset, -MAX_OFFSET_S, MAX_OFFSET_S):
        raise RequestRejected(
            f"iat_offset_s must be an integer from -{MAX_OFFSET_S} to {MAX_OFFSET_S}"
        )
    typ = body.get("typ", "at+jwt")
    if typ not in TYPES:
        raise RequestRejected("typ must be 'at+jwt' or 'JWT'")
    extra = body.get("claims", {})
    if not isinstance(extra, dict):
        raise RequestRejected("claims must be a JSON object")
    overridden = sorted(set(extra) & RESERVED)
    if overridden:
        raise RequestRejected(f"claims may not set {', '.join(overridden)}: use the request fields")
    return UserTokenRequest(
        sub=sub,
        pii_token=body.get("pii_token"),
        audience=audience,
        scope=body.get("scope"),
        azp=body.get("azp"),
        lifetime_s=lifetime,
        typ=typ,
        claims=extra,
        iat_offset_s=offset,
    )


def build_user_token(
    request: UserTokenRequest,
    *,
    issuer: str,
    pii_claim: str,
    default_lifetime_s: int,
    now: float,
    jti: str,
    kid: str,
    alg: str,
) -> TokenParts:
    """The header and claims of an end user's access token."""
    iat = int(now) + request.iat_offset_s
    lifetime = request.lifetime_s if request.lifetime_s is not None else default_lifetime_s
    # Extra claims first, so the issuer's own claims can never be displaced by them. They may
    # set the pii claim when `pii_token` is absent (e.g. a number, to test claim validation).
    claims: dict[str, Any] = dict(request.claims)
    if request.pii_token is not None:
        # One opaque key: the namespaced name contains dots and slashes and is not a path.
        claims[pii_claim] = request.pii_token
    claims.update({"iss": issuer, "sub": request.sub})
    if request.audience is not None:
        claims["aud"] = _aud(request.audience)
    claims.update({"iat": iat, "exp": iat + lifetime, "jti": jti})
    if request.azp is not None:
        claims["azp"] = request.azp
    if request.scope is not None:
        claims["scope"] = request.scope
    return TokenParts(header={"typ": request.typ, "alg": alg, "kid": kid}, claims=claims)


def build_client_token(
    *,
    issuer: str,
    client_id: str,
    audience: str,
    scope: str,
    lifetime_s: int,
    now: float,
    jti: str,
    kid: str,
    alg: str,
) -> TokenParts:
    """The header and claims of a client-credentials (machine-to-machine) access token."""
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": f"{client_id}@clients",  # Auth0's M2M subject shape
        "aud": audience,
        "iat": iat,
        "exp": iat + lifetime_s,
        "jti": jti,
        "azp": client_id,
        "client_id": client_id,  # RFC 9068 §2.2
        "gty": "client-credentials",
        "scope": scope,
    }
    return TokenParts(header={"typ": "at+jwt", "alg": alg, "kid": kid}, claims=claims)


def _aud(audience: str | tuple[str, ...]) -> str | list[str]:
    # A single string stays a string (as Auth0 does for one audience); a list stays a list,
    # even of one element, so tests can produce both shapes.
    return audience if isinstance(audience, str) else list(audience)


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
