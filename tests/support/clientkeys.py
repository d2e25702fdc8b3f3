"""Test helper: a client's key pair for `private_key_jwt`: the private PEM the client
signs with and the public JWK the dev issuer registers (`[[clients]] jwks = [...]`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm


@dataclass(frozen=True)
class ClientKey:
    """A private key as PEM and its public JWK (with `kid` and `alg`)."""

    algorithm: str
    kid: str
    private_pem: bytes = field(repr=False)
    public_jwk: dict[str, str]


def client_key(algorithm: str, kid: str) -> ClientKey:
    """A fresh RSA-2048 (RS256/RS384) or EC P-256/P-384 (ES256/ES384) key."""
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if algorithm.startswith("RS"):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        curve = ec.SECP256R1() if algorithm == "ES256" else ec.SECP384R1()
        private = ec.generate_private_key(curve)
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public = {k: str(v) for k, v in jwk.items() if k != "key_ops"}
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ClientKey(algorithm, kid, pem, {**public, "kid": kid, "alg": algorithm})
