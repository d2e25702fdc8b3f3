"""tokens.verification.verify (steps 1-13, with tokens.jws for 1-7) on hostile tokens.

Input: the first byte picks a mode, the rest is split at newlines.

- mode 0: the rest is the token text, verbatim.
- modes 1-3: `HEADER\\nPAYLOAD[\\nEDITS]`: the harness signs `b64(HEADER).b64(PAYLOAD)`
  as it stands (any bytes, any `alg` in it) with the run's RSA (1), P-256 (2) or Ed25519
  (3) key, then applies EDITS, pairs of bytes (position, new character), to the token.
  So the claims checks and the signature check both see real signed tokens. The token
  (mode 0), HEADER and PAYLOAD may be `expand`ed (a thousand-digit `exp`).

Documented errors: `TokenRejected` and its subclasses. Oracle ("accepted forgery"): a
token that verifies must carry a signing input the harness signed, and its claims must
be exactly that signed payload.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from piigate import strictjson
from piigate.errors import TokenRejected
from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, KeySet, parse_jwks
from piigate.tokens.verification import IssuerPolicy, TypRule, verify
from tests.fuzz.targets import Finding, expand

NOW = 1_800_000_000.0
ISSUER = "https://issuer.example/"
_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
POLICIES = (
    IssuerPolicy("fuzz", ISSUER, _ALGORITHMS, audiences=("piigate",), max_lifetime_s=3600,
                 max_age_s=7200, required_claims=("iss", "sub", "exp", "iat")),
    IssuerPolicy("fuzz", ISSUER, _ALGORITHMS, typ_rule=TypRule.ANY),
    IssuerPolicy("fuzz", ISSUER, _ALGORITHMS, typ_rule=TypRule.KEYCLOAK, leeway_s=0),
    IssuerPolicy("fuzz", ISSUER, tuple(sorted(ASYMMETRIC_ALGORITHMS)),
                 typ_rule=TypRule.COGNITO, audiences=("a", "b")),
)

_signers: dict[int, tuple[str, Any]] = {}
_keys: KeySet | None = None


def setup(workdir: Path) -> None:
    """Fresh keys for this run, published as a JWKS the real parser reads."""
    global _keys
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    _signers.update({1: ("r", rsa_key), 2: ("e", ec_key), 3: ("d", ed_key)})
    jwks = [
        {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r"},
        {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "e"},
        {**json.loads(OKPAlgorithm.to_jwk(ed_key.public_key())), "kid": "d"},
    ]
    _keys = parse_jwks(json.dumps({"keys": jwks}).encode(), ASYMMETRIC_ALGORITHMS)


def seeds() -> list[bytes]:
    """Well-formed access tokens' parts for each key under each policy."""
    claims = {"iss": ISSUER, "sub": "user-1", "aud": "piigate", "exp": NOW + 600,
              "iat": NOW - 60, "nbf": NOW - 60, "jti": "j1", "typ": "Bearer",
              "token_use": "access", "scope": "patient/Patient.rs"}
    out = []
    for policy in range(len(POLICIES)):
        for mode, (kid, alg) in {1: ("r", "RS256"), 2: ("e", "ES256"), 3: ("d", "EdDSA")}.items():
            header = {"alg": "PS256" if policy % 2 and mode == 1 else alg, "kid": kid,
                      "typ": "at+jwt"}
            out.append(bytes([mode + 4 * policy]) + json.dumps(header).encode() + b"\n"
                       + json.dumps(claims).encode())
    return out


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(mode: int, signing_input: bytes, header: bytes) -> bytes:
    _, key = _signers[mode]
    if isinstance(key, rsa.RSAPrivateKey):
        if b"PS256" in header:
            return key.sign(signing_input, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                            hashes.SHA256())
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        der = key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    signature: bytes = key.sign(signing_input)
    return signature


def _token(data: bytes) -> tuple[str, set[str]]:
    """The token to verify and the signing inputs the harness signed for it."""
    mode, rest = data[0] % 4, data[1:]
    if mode == 0:
        return expand(rest).decode("latin-1"), set()
    header, _, rest = rest.partition(b"\n")
    payload, _, edits = rest.partition(b"\n")
    header, payload = expand(header), expand(payload)
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    signature = _sign(mode, signing_input.encode("ascii"), header)
    token = list(f"{signing_input}.{_b64(signature)}")
    for at in range(0, len(edits) - 1, 2):
        token[edits[at] % len(token)] = chr(edits[at + 1])
    return "".join(token), {signing_input}


def fuzz(data: bytes) -> None:
    if not data:
        return
    assert _keys is not None, "setup() first"
    token, signed = _token(data)
    policy = POLICIES[(data[0] // 4) % len(POLICIES)]
    try:
        verified = verify(token, _keys, policy, NOW)
    except TokenRejected:
        return
    signing_input, _, _ = token.rpartition(".")
    if signing_input not in signed:
        raise Finding(f"accepted a token the test key did not sign: {token!r}")
    payload = base64.urlsafe_b64decode(signing_input.partition(".")[2] + "==")
    if verified.claims != _frozen(strictjson.loads(payload)):
        raise Finding("the verified claims are not the signed payload")


def _frozen(value: Any) -> Any:
    """A JSON value as `verify` returns it (arrays as tuples), for comparison."""
    if isinstance(value, dict):
        return {name: _frozen(item) for name, item in value.items()}
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value
