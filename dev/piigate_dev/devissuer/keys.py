"""Signing keys, their public JWKs, and the rotation state machine.

Invariants of a `KeyRing`:

1. There is always exactly one current key; it signs every new token.
2. The published set (the JWKS) holds the current key and every key rotated out but not
   yet retired, oldest first, so a token signed before a rotation still verifies.
3. `rotate()` adds a fresh key and makes it current; nothing is removed.
4. `retire()` removes every non-current key; after it only the current key is published.
5. Private keys never leave this module's objects: they are not serialized, written to disk,
   logged or shown in a repr. Only the public JWK is ever exported.

Key generation is the one source of randomness, passed in as a factory so the state
machine can be tested with cheap keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# RFC 7638 §3.2: the members that make up the thumbprint input, per key type.
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}


@dataclass(frozen=True)
class SigningKey:
    """A private key with its `kid`, `alg` and public JWK (which carries kid, use, alg)."""

    kid: str
    alg: str
    public_jwk: dict[str, str]
    private_key: PrivateKey = field(repr=False)

    def sign(self, claims: dict[str, Any], header: dict[str, Any]) -> str:
        """The compact JWS of `claims`; `header` gains this key's `alg` and `kid`."""
        headers = {**header, "kid": self.kid}
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=headers)


def generate_signing_key(alg: str) -> SigningKey:
    """A fresh key: RS256 (RSA 2048, e=65537), ES256 (P-256) or EdDSA (Ed25519)."""
    private_key: PrivateKey
    if alg == "RS256":
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    elif alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    else:
        raise ValueError(f"unsupported algorithm {alg!r}")
    # Keep only the public members: PyJWT adds `key_ops`, which RFC 7517 §4.3 says should not
    # appear beside `use`.
    public = {m: str(jwk[m]) for m in _THUMBPRINT_MEMBERS[str(jwk["kty"])]}
    kid = jwk_thumbprint(public)
    return SigningKey(kid, alg, {**public, "kid": kid, "use": "sig", "alg": alg}, private_key)


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class KeyRing:
    """The issuer's keys: one current signer plus keys still published for verification."""

    def __init__(
        self,
        alg: str,
        key_factory: Callable[[str], SigningKey] = generate_signing_key,
        first: SigningKey | None = None,
    ) -> None:
        self.alg = alg
        self._key_factory = key_factory
        self._keys: list[SigningKey] = [first if first is not None else key_factory(alg)]

    def __repr__(self) -> str:
        return f"KeyRing(alg={self.alg!r}, kids={self.kids!r})"

    @property
    def current(self) -> SigningKey:
        """The key that signs new tokens (always the newest)."""
        return self._keys[-1]

    @property
    def kids(self) -> list[str]:
        """Published key ids, oldest first; the last one is current."""
        return [key.kid for key in self._keys]

    def rotate(self, key: SigningKey | None = None) -> SigningKey:
        """Add a fresh key (or `key`, generated off the event loop) and make it current.

        The previous keys stay published until `retire()`.
        """
        key = key if key is not None else self._key_factory(self.alg)
        if key.alg != self.alg:
            raise ValueError(f"the ring signs with {self.alg}, not {key.alg}")
        if key.kid in self.kids:  # a thumbprint collision means the factory reused a key
            raise ValueError("the key factory returned a key already in the ring")
        self._keys.append(key)
        return key

    def retire(self) -> list[str]:
        """Stop publishing every non-current key; returns the retired kids."""
        retired = self.kids[:-1]
        self._keys = [self.current]
        return retired

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JSON Web Key Set (RFC 7517 §5): public members only."""
        return {"keys": [dict(key.public_jwk) for key in self._keys]}
