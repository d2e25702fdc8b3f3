"""Issuer signing keys: the JWKS document and its parsing, pure.

`parse_jwks(document, allowed_algorithms) -> KeySet` keeps only keys that can verify a
signature under an allowed asymmetric algorithm and never a symmetric or private key
(RFC 8725 §3.1/§3.2; RFC 7517 §4.2/§4.3 `use`/`key_ops`). The per-issuer cache that
fetches documents is `piigate.tokens.jwks`.

Rules held by this module:

R1. A key set never holds `oct` keys, private key material, encryption-only keys, RSA
    keys under 2048 bits or with the ROCA fingerprint; a key the allowed algorithms cannot
    use is dropped.
R2. An entry that is a symmetric (`oct`) key or carries private key material is skipped
    whole (not even its public half is used) and counted under `secret_key_material`, so
    the cache can log it and health can show it; every other skipped entry is counted
    under `unusable`. The rest of the set stays usable: an operator expects such keys to
    be ignored, and a key that cannot verify is never used either way.
R3. A document with two entries under one `kid` (skipped entries included) is refused
    whole: a `kid` must name exactly one key, or an attacker-chosen lookup could pick the
    weaker one.
R4. Neither key material nor tokens are logged; errors carry short fixed codes.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from piigate import strictjson

log = logging.getLogger(__name__)

PublicKey: TypeAlias = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHM_BY_CURVE: Mapping[str, str] = MappingProxyType(
    {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
)
#: The only algorithms piigate ever verifies: asymmetric, so a published key can never
#: sign (RFC 8725 §3.1, §2.1 "none", §2.2 HMAC-with-public-key confusion).
ASYMMETRIC_ALGORITHMS = frozenset(
    {*RSA_ALGORITHMS, *EC_ALGORITHM_BY_CURVE.values(), "EdDSA", "Ed25519"}
)
#: RFC 9864: `Ed25519` is the fully specified name of EdDSA over Ed25519, the only EdDSA
#: piigate verifies; in a token, an allowlist or a JWK `alg`, either name means both.
ED25519_NAMES = frozenset({"EdDSA", "Ed25519"})

MIN_RSA_BITS = 2048
MAX_KID_LENGTH = 128
# JWK members that carry private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4).
_SECRET_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JwksInvalid(ValueError):
    """The JWKS document cannot be used. `detail` is a short fixed code, never content."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def algorithms_for(kty: str, crv: str | None) -> frozenset[str]:
    """The algorithms a key of this type (and curve) can verify, before any `alg` pin."""
    if kty == "RSA":
        return RSA_ALGORITHMS
    if kty == "EC" and crv is not None and crv in EC_ALGORITHM_BY_CURVE:
        return frozenset({EC_ALGORITHM_BY_CURVE[crv]})
    if kty == "OKP" and crv == "Ed25519":
        return ED25519_NAMES
    return frozenset()


def with_ed25519_aliases(algorithms: frozenset[str]) -> frozenset[str]:
    """`algorithms` with both names of EdDSA over Ed25519 if it has either (RFC 9864)."""
    return algorithms | ED25519_NAMES if not ED25519_NAMES.isdisjoint(algorithms) else algorithms


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public signature key of an issuer.

    `algorithms` is what this key may verify: its JWK `alg` if it names one, else every
    allowed algorithm of its type. `fingerprint` (SHA-256 of the SubjectPublicKeyInfo)
    identifies the key material across fetches.
    """

    kid: str | None
    kty: str
    crv: str | None
    jwk_alg: str | None
    algorithms: frozenset[str]
    public_key: PublicKey = field(repr=False)
    fingerprint: bytes = field(repr=False)


#: Why an entry of a JWKS document was left out of its key set (R2).
SKIPPED_SECRET = "secret_key_material"  # noqa: S105 - a reason code, not a secret
SKIPPED_UNUSABLE = "unusable"


@dataclass(frozen=True)
class KeySet:
    """An issuer's usable keys by `kid` (a key published without `kid` is under None).

    `skipped` counts the document's entries that were left out, by reason (R2).
    """

    keys: Mapping[str | None, VerificationKey]
    fetched_at: float = 0.0
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "skipped", MappingProxyType(dict(self.skipped)))

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[str | None]:
        return iter(self.keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self.keys

    def get(self, kid: str | None) -> VerificationKey | None:
        """The key published under exactly this `kid`, if any."""
        return self.keys.get(kid)


# --- parse_jwks (pure) -------------------------------------------------------------------
def parse_jwks(document: bytes, allowed_algorithms: Collection[str]) -> KeySet:
    """Parse a JWKS document into the keys piigate may verify with.

    Raises `JwksInvalid` when the document is not a JSON object with a `keys` array, when
    two entries share a `kid` (R3), or when no usable key remains. Symmetric keys and
    entries with private key material (R2) and malformed or unsuitable keys (R1) are
    skipped and counted in the result's `skipped`. The result's `fetched_at` is 0; the
    cache sets it.
    """
    allowed = with_ed25519_aliases(frozenset(allowed_algorithms)) & ASYMMETRIC_ALGORITHMS
    try:
        parsed = strictjson.loads(document)
    except strictjson.DuplicateMember as exc:
        raise JwksInvalid("duplicate_member") from exc
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise JwksInvalid("not_json") from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
        raise JwksInvalid("no_keys_array")

    seen_kids: set[str | None] = set()
    for entry in parsed["keys"]:
        if isinstance(entry, dict) and isinstance(entry.get("kid"), str):
            if entry["kid"] in seen_kids:
                raise JwksInvalid("duplicate_kid")
            seen_kids.add(entry["kid"])

    keys: dict[str | None, VerificationKey] = {}
    skipped = {SKIPPED_SECRET: 0, SKIPPED_UNUSABLE: 0}
    for entry in parsed["keys"]:
        if is_secret_entry(entry):
            skipped[SKIPPED_SECRET] += 1
            continue
        key = _usable_key(entry, allowed)
        if key is None:
            skipped[SKIPPED_UNUSABLE] += 1
            continue
        if key.kid in keys:  # only reachable for two usable keys without a kid
            raise JwksInvalid("duplicate_kid")
        keys[key.kid] = key
    if not keys:
        raise JwksInvalid("no_usable_keys")
    return KeySet(keys, skipped={reason: n for reason, n in skipped.items() if n})


def is_secret_entry(entry: object) -> bool:
    """Whether a JWKS entry is a symmetric key or carries private key material (R2)."""
    if not isinstance(entry, dict):
        return False
    return entry.get("kty") == "oct" or bool(_SECRET_MEMBERS & entry.keys())


def _usable_key(entry: object, allowed: frozenset[str]) -> VerificationKey | None:
    """The entry as a VerificationKey, or None when it is malformed or unsuitable (R1)."""
    if not isinstance(entry, dict):
        return None
    kty, crv, kid, alg = (entry.get(name) for name in ("kty", "crv", "kid", "alg"))
    if not isinstance(kty, str) or is_secret_entry(entry):
        return None  # skipped by parse_jwks already; kept for direct callers
    if crv is not None and not isinstance(crv, str):
        return None
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
        return None
    if "use" in entry and entry["use"] != "sig":
        return None
    if "key_ops" in entry:
        ops = entry["key_ops"]
        if not isinstance(ops, list) or "verify" not in ops:
            return None
    usable = algorithms_for(kty, crv) & allowed
    if alg is not None:
        # RFC 7517 §4.4: `alg` pins the key to one algorithm; an unknown or mismatched
        # `alg` (e.g. ES256 on a P-384 key) leaves nothing it may verify.
        if not isinstance(alg, str):
            return None
        usable &= with_ed25519_aliases(frozenset({alg}))
    if not usable:
        return None
    public_key = _public_key(entry, kty)
    if public_key is None:
        return None
    fingerprint = hashlib.sha256(
        public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()
    return VerificationKey(
        kid=kid,
        kty=kty,
        crv=crv,
        jwk_alg=alg,
        algorithms=usable,
        public_key=public_key,
        fingerprint=fingerprint,
    )


def _public_key(entry: dict[str, Any], kty: str) -> PublicKey | None:
    members = {"RSA": ("n", "e"), "EC": ("x", "y"), "OKP": ("x",)}[kty]
    if not all(isinstance(entry.get(name), str) for name in members):
        return None
    try:
        if kty == "RSA":
            key: object = RSAAlgorithm.from_jwk(entry)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(entry)
        else:
            key = OKPAlgorithm.from_jwk(entry)
    except (PyJWTError, ValueError, TypeError, binascii.Error):
        return None
    if isinstance(key, RSAPublicKey):
        if key.key_size < MIN_RSA_BITS or is_roca_weak(key.public_numbers().n):
            return None
        return key
    if isinstance(key, EllipticCurvePublicKey | Ed25519PublicKey):
        return key
    return None


# ROCA (CVE-2017-15361, Nemec et al.): moduli made by the flawed Infineon generator are
# residues of 65537's subgroup modulo each of these primes. An honest modulus passes all of
# them with probability about 4e-9; a ROCA modulus always does, and it can be factored.
_ROCA_PRIMES = (
    *(3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73),
    *(79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167),
)
_ROCA_RESIDUES = {
    prime: frozenset(pow(65537, exponent, prime) for exponent in range(prime))
    for prime in _ROCA_PRIMES
}


def is_roca_weak(modulus: int) -> bool:
    """True when an RSA modulus has the ROCA fingerprint."""
    return all(modulus % prime in _ROCA_RESIDUES[prime] for prime in _ROCA_PRIMES)

