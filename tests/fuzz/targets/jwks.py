"""tokens.keys.parse_jwks on hostile JWKS documents.

Input: the document's bytes. Documented error: `JwksInvalid`. Oracle: every key it keeps
verifies only allowed algorithms its type can use, and only its JWK `alg` if it has one
(`EdDSA` and `Ed25519` name one algorithm, RFC 9864).
"""

from __future__ import annotations

import json
from collections.abc import Collection

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, JwksInvalid, algorithms_for, parse_jwks
from tests.fuzz.targets import Finding, expand

ALLOWED = ("RS256", "PS384", "ES256", "ES384", "EdDSA")
_ED25519 = frozenset({"EdDSA", "Ed25519"})


def seeds() -> list[bytes]:
    """A JWKS of fresh public keys of every supported type (no private members)."""
    keys = [
        {**json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 2048).public_key())),
         "kid": "rsa", "use": "sig", "alg": "RS256"},
        {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())),
         "kid": "p256", "key_ops": ["verify"]},
        {**json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())),
         "kid": "p384", "alg": "ES256"},
        {**json.loads(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key()))},
    ]
    return [json.dumps({"keys": keys}).encode(), json.dumps({"keys": keys[:1]}).encode()]


def fuzz(data: bytes) -> None:
    data = expand(data)
    allowed = ALLOWED if not data or data[-1] % 2 else ASYMMETRIC_ALGORITHMS
    try:
        keys = parse_jwks(data, allowed)
    except JwksInvalid:
        return
    if not len(keys):
        raise Finding("an empty key set was returned instead of JwksInvalid")
    for kid in keys:
        key = keys.get(kid)
        assert key is not None
        if not key.algorithms or not key.algorithms <= _names(allowed):
            raise Finding(f"key {kid!r} verifies algorithms that are not allowed")
        if not key.algorithms <= algorithms_for(key.kty, key.crv):
            raise Finding(f"key {kid!r} verifies algorithms its type cannot use")
        if key.jwk_alg is not None and not key.algorithms <= _names({key.jwk_alg}):
            raise Finding(f"key {kid!r} is not pinned to its JWK alg")
        if len(key.fingerprint) != 32:
            raise Finding("fingerprint is not a SHA-256")


def _names(algorithms: Collection[str]) -> frozenset[str]:
    """`algorithms` with both names of EdDSA over Ed25519 if either is there (RFC 9864)."""
    names = frozenset(algorithms)
    return names | _ED25519 if names & _ED25519 else names
