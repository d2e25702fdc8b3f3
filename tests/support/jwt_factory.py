"""Test-time keys and tokens: RSA/EC/Ed25519 key pairs, JWK(S) documents, signed JWTs.

`make_token` signs ordinary tokens through PyJWT; `raw_token` signs arbitrary header and
payload bytes (duplicate keys, odd headers) so tests can build what PyJWT would refuse to.
Key generation is cached per (type, kid): RSA keys are slow to make.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_CURVES: Mapping[str, tuple[type[ec.EllipticCurve], str]] = {
    "P-256": (ec.SECP256R1, "ES256"),
    "P-384": (ec.SECP384R1, "ES384"),
    "P-521": (ec.SECP521R1, "ES512"),
}


@dataclass(frozen=True)
class KeyPair:
    """A private key with its kid and default algorithm."""

    private_key: PrivateKey
    kid: str | None
    alg: str

    @property
    def public_key(self) -> Any:
        return self.private_key.public_key()

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK (`use: sig`, `alg`, `kid`), with `extra` members merged over it.
        Pass `alg=None` (or any member = None) to drop that member."""
        public = self.public_key
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            body = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(self.private_key, ec.EllipticCurvePrivateKey):
            body = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            body = OKPAlgorithm.to_jwk(public, as_dict=True)
        document: dict[str, Any] = {**body, "use": "sig", "alg": self.alg}
        if self.kid is not None:
            document["kid"] = self.kid
        document.update(extra)
        return {name: value for name, value in document.items() if value is not None}

    def with_alg(self, alg: str) -> KeyPair:
        return KeyPair(self.private_key, self.kid, alg)


@functools.cache
def _rsa_private(kid: str | None, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def _ec_private(kid: str | None, curve: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVES[curve][0]())


@functools.cache
def _ed_private(kid: str | None) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def rsa_keypair(kid: str | None = "rsa-1", *, bits: int = 2048, alg: str = "RS256") -> KeyPair:
    return KeyPair(_rsa_private(kid, bits), kid, alg)


def ec_keypair(kid: str | None = "ec-1", *, curve: str = "P-256") -> KeyPair:
    return KeyPair(_ec_private(kid, curve), kid, _CURVES[curve][1])


def ed25519_keypair(kid: str | None = "ed-1") -> KeyPair:
    return KeyPair(_ed_private(kid), kid, "EdDSA")


def jwks(*entries: Any) -> dict[str, Any]:
    """A JWKS document: key pairs become their public JWKs, anything else is used as given
    (so tests can put malformed entries in)."""
    return {"keys": [entry.jwk() if isinstance(entry, KeyPair) else entry for entry in entries]}


def jwks_bytes(*entries: Any) -> bytes:
    return json.dumps(jwks(*entries)).encode()


def b64(data: bytes | str) -> str:
    """Unpadded base64url."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def sign(signing_input: bytes, key: KeyPair, alg: str | None = None) -> bytes:
    """A signature over `signing_input` with `key` under `alg` (default the key's)."""
    algorithm = get_default_algorithms()[alg or key.alg]
    signature: bytes = algorithm.sign(signing_input, key.private_key)
    return signature


def make_token(
    claims: Mapping[str, Any],
    key: KeyPair,
    headers: Mapping[str, Any] | None = None,
    *,
    alg: str | None = None,
    typ: str | None = "at+jwt",
) -> str:
    """A JWT signed by `key` under `alg` (default the key's). Header: `alg`, `kid`, `typ`,
    then `headers` merged over those; a header value of None drops that member."""
    signing_alg = alg or key.alg
    header: dict[str, Any] = {"alg": signing_alg, "kid": key.kid, "typ": typ}
    header.update(headers or {})
    header = {name: value for name, value in header.items() if value is not None}
    return raw_token(json.dumps(header), json.dumps(dict(claims)), key, alg=signing_alg)


def raw_token(
    header: str | bytes,
    payload: str | bytes,
    key: KeyPair | None,
    *,
    alg: str | None = None,
) -> str:
    """A compact JWS of exactly these header and payload bytes, signed by `key` under
    `alg` (no signature when key is None)."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = b"" if key is None else sign(signing_input.encode(), key, alg)
    return f"{signing_input}.{b64(signature)}"


def hmac_token(claims: Mapping[str, Any], secret: bytes, headers: Mapping[str, Any]) -> str:
    """An HS256 token with `secret` as the key (for key-confusion attacks)."""
    header = {"alg": "HS256", "typ": "at+jwt", **headers}
    signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(dict(claims)))}"
    mac = get_default_algorithms()["HS256"].sign(signing_input.encode(), secret)
    return f"{signing_input}.{b64(mac)}"


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) without verification, for assertions."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return header, claims
