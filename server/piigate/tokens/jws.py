"""Compact JWS: structure and authentication, steps 1-7 of token verification. Pure.

Steps 1-7 of the numbered rules in `piigate.tokens.verification`'s docstring (which
runs them all): size, structure, forbidden headers, algorithm, key, key binding,
signature; each raises its own `TokenRejected` subclass.

`verify_signature(token, keys, algorithms)` is steps 1-7 for a JWT; `verify_jws` the same
for a payload that need not be JSON (test vectors); `peek` is steps 1-2, to choose the
issuer whose keys will verify the token.

Error metadata never holds token text: only header names, the `kid` when it is a short
[A-Za-z0-9._-] string and the `alg` when it is a registered name.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import (
    SECP256R1,
    SECP384R1,
    SECP521R1,
    EllipticCurvePublicKey,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError

from piigate import strictjson
from piigate.errors import (
    TokenAlgorithmNotAllowed,
    TokenClaimInvalid,
    TokenClaimMissing,
    TokenHeaderForbidden,
    TokenKeyUnknown,
    TokenMalformed,
    TokenSignatureInvalid,
    TokenTooLarge,
)
from piigate.tokens.keys import (
    ASYMMETRIC_ALGORITHMS,
    ED25519_NAMES,
    MAX_KID_LENGTH,
    RSA_ALGORITHMS,
    KeySet,
    VerificationKey,
    algorithms_for,
)

DEFAULT_MAX_TOKEN_BYTES = 8192

#: RFC 8725 §3.10 / RFC 7515 §4.1: the token must not choose keys (jku, x5u, jwk, x5c)
#: nor processing rules (crit; b64 from RFC 7797 changes what is signed).
FORBIDDEN_HEADERS = frozenset({"crit", "jku", "x5u", "jwk", "x5c", "b64"})

_REGISTERED_ALGORITHM_NAMES = frozenset(
    {*ASYMMETRIC_ALGORITHMS, "none", "HS256", "HS384", "HS512", "ES256K", "Ed25519", "Ed448"}
)
_SAFE_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")

# PyJWT's algorithm objects for the asymmetric algorithms only: none and HS* are never
# looked up, whatever a token's header says.
_ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {
        **{n: a for n, a in get_default_algorithms().items() if n in ASYMMETRIC_ALGORITHMS},
        "Ed25519": get_default_algorithms()["EdDSA"],  # RFC 9864's name for the same
    }
)


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A structurally valid compact JWS, not yet authenticated."""

    header: Mapping[str, Any]
    payload: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class UnverifiedIdentity:
    """What an unverified token claims about itself: used only to choose keys."""

    issuer: str
    kid: str | None


def freeze(value: Any) -> Any:
    """A JSON value made read-only all the way down: objects become read-only mappings,
    arrays tuples (a verified token may be shared between requests)."""
    if isinstance(value, Mapping):
        return MappingProxyType({name: freeze(item) for name, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


# --- structure (steps 1-2) ---------------------------------------------------------------
def _b64url_decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 §2): unpadded, alphabet only, canonical trailing bits."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise TokenMalformed()
    try:
        decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenMalformed() from exc
    if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode("ascii") != segment:
        raise TokenMalformed()  # non-zero unused bits: two encodings of the same bytes
    return decoded


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = strictjson.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TokenMalformed() from exc
    if not isinstance(value, dict):
        raise TokenMalformed()
    return value


def decode_compact(token: str, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> CompactJws:
    """Steps 1-2 for the header: size, segments, base64url, header JSON object."""
    if not isinstance(token, str):
        raise TokenMalformed()
    if len(token) > max_bytes:
        raise TokenTooLarge()
    if not token.isascii():
        raise TokenMalformed()
    segments = token.split(".")
    if len(segments) != 3:  # a JWE has five; JSON serialization has none
        raise TokenMalformed()
    header, payload, signature = (_b64url_decode(segment) for segment in segments)
    return CompactJws(header=_json_object(header), payload=payload, signature=signature)


def peek(token: str, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> UnverifiedIdentity:
    """The unverified `iss` and `kid`, after the structural checks. Nothing here is
    trusted: it only selects the issuer whose keys will verify the token."""
    jws = decode_compact(token, max_bytes)
    claims = _json_object(jws.payload)
    if "iss" not in claims:
        raise TokenClaimMissing({"claim": "iss"})
    issuer = claims["iss"]
    if not isinstance(issuer, str) or not issuer:
        raise TokenClaimInvalid({"claim": "iss"})
    kid = jws.header.get("kid")
    return UnverifiedIdentity(issuer=issuer, kid=kid if isinstance(kid, str) else None)


def peek_issuer(token: str, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> str:
    """The unverified `iss` string (see `peek`)."""
    return peek(token, max_bytes).issuer


# --- authentication (steps 3-7) ----------------------------------------------------------
def _kid_metadata(kid: object) -> dict[str, str]:
    return {"kid": kid} if isinstance(kid, str) and _SAFE_KID.fullmatch(kid) else {}


def _checked_algorithm(header: Mapping[str, Any], algorithms: Collection[str]) -> str:
    forbidden = FORBIDDEN_HEADERS & header.keys()
    if forbidden:
        raise TokenHeaderForbidden({"header": min(forbidden)})
    alg = header.get("alg")
    # Membership in ASYMMETRIC_ALGORITHMS is exact and case-sensitive: "none", "NONE",
    # "HS256" and friends are refused even if a misconfigured allowlist names them.
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS or (
        alg not in algorithms
        and not (alg in ED25519_NAMES and not ED25519_NAMES.isdisjoint(algorithms))
    ):
        metadata = (
            {"alg": alg} if isinstance(alg, str) and alg in _REGISTERED_ALGORITHM_NAMES else {}
        )
        raise TokenAlgorithmNotAllowed(metadata)
    return alg


def select_key(keys: KeySet, kid: object) -> VerificationKey:
    """Step 5: the key named by `kid`, by exact lookup; without a kid, the only key."""
    if kid is None:
        if len(keys) == 1:
            return next(iter(keys.keys.values()))
        raise TokenKeyUnknown()
    if not isinstance(kid, str):
        raise TokenMalformed()  # RFC 7515 §4.1.4: kid is a string
    key = keys.get(kid) if 0 < len(kid) <= MAX_KID_LENGTH else None
    if key is None:
        raise TokenKeyUnknown(_kid_metadata(kid))
    return key


_CURVE_BY_ALGORITHM = {"ES256": SECP256R1, "ES384": SECP384R1, "ES512": SECP521R1}


def _check_key_binding(key: VerificationKey, alg: str, metadata: Mapping[str, str]) -> None:
    """Step 6: the algorithm the token names must be one this key was published for."""
    fits_type = alg in algorithms_for(key.kty, key.crv) and alg in key.algorithms
    if alg in RSA_ALGORITHMS:
        fits_key = isinstance(key.public_key, RSAPublicKey)
    elif alg in _CURVE_BY_ALGORITHM:
        fits_key = isinstance(key.public_key, EllipticCurvePublicKey) and isinstance(
            key.public_key.curve, _CURVE_BY_ALGORITHM[alg]
        )
    else:
        fits_key = isinstance(key.public_key, Ed25519PublicKey)
    pinned = key.jwk_alg is None or key.jwk_alg == alg or (
        {key.jwk_alg, alg} <= ED25519_NAMES)
    if not (fits_type and fits_key and pinned):
        raise TokenAlgorithmNotAllowed({"alg": alg, **metadata})


def _authenticate(token: str, jws: CompactJws, keys: KeySet, algorithms: Collection[str]) -> None:
    alg = _checked_algorithm(jws.header, algorithms)
    kid = jws.header.get("kid")
    if "kid" in jws.header and not isinstance(kid, str):
        raise TokenMalformed()  # RFC 7515 §4.1.4: kid is a string (null is not "absent")
    key = select_key(keys, kid)
    metadata = _kid_metadata(kid)
    _check_key_binding(key, alg, metadata)
    # The token's structure was already checked strictly (decode_compact), so the
    # signature is verified directly over the signing input, without PyJWT parsing the
    # token a second time; the algorithm objects are PyJWT's (ECDSA raw-to-DER included).
    signing_input = token.rpartition(".")[0].encode("ascii")
    try:
        valid = _ALGORITHMS[alg].verify(signing_input, key.public_key, jws.signature)
    except (PyJWTError, ValueError, TypeError) as exc:
        raise TokenSignatureInvalid(metadata) from exc
    if not valid:
        raise TokenSignatureInvalid(metadata)


def verify_jws(
    token: str,
    keys: KeySet,
    algorithms: Collection[str],
    *,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
) -> tuple[Mapping[str, Any], bytes]:
    """Steps 1-7 for any compact JWS: (header, raw payload). The payload need not be JSON."""
    jws = decode_compact(token, max_bytes)
    _authenticate(token, jws, keys, algorithms)
    return freeze(jws.header), jws.payload


def verify_signature(
    token: str,
    keys: KeySet,
    algorithms: Collection[str],
    *,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """Steps 1-7 for a JWT: the authenticated (header, claims), both read-only."""
    jws = decode_compact(token, max_bytes)
    claims = _json_object(jws.payload)
    _authenticate(token, jws, keys, algorithms)
    return freeze(jws.header), freeze(claims)
