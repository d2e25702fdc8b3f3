"""Signing keys: JWKS shape per algorithm, RFC 7638 kids, and the rotation state machine."""

from __future__ import annotations

import itertools

import jwt
import pytest

from piigate_dev.devissuer.keys import KeyRing, SigningKey, generate_signing_key, jwk_thumbprint

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def test_rfc7638_example_thumbprint() -> None:
    # RFC 7638 §3.1: the worked example's key and thumbprint.
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YG"
        "jQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
        "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    ("alg", "kty", "members"),
    [
        ("RS256", "RSA", {"n", "e"}),
        ("ES256", "EC", {"crv", "x", "y"}),
        ("EdDSA", "OKP", {"crv", "x"}),
    ],
)
def test_jwk_is_public_with_kid_use_alg(alg: str, kty: str, members: set[str]) -> None:
    key = generate_signing_key(alg)
    jwk = KeyRing(alg, first=key).jwks()["keys"][0]
    assert set(jwk) == {"kty", "kid", "use", "alg"} | members
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (jwk["kty"], jwk["use"], jwk["alg"]) == (kty, "sig", alg)
    assert jwk["kid"] == key.kid == jwk_thumbprint(jwk)
    if alg == "ES256":
        assert jwk["crv"] == "P-256"
    if alg == "EdDSA":
        assert jwk["crv"] == "Ed25519"


def test_rsa_key_is_2048_bits() -> None:
    key = generate_signing_key("RS256")
    assert jwt.PyJWK(key.public_jwk).key.key_size == 2048


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_signed_token_verifies_with_published_jwk(alg: str) -> None:
    key = generate_signing_key(alg)
    token = key.sign({"sub": "u"}, {"typ": "at+jwt"})
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "kid": key.kid, "typ": "at+jwt"}
    assert jwt.decode(token, jwt.PyJWK(key.public_jwk), algorithms=[alg]) == {"sub": "u"}


def test_private_key_not_in_repr() -> None:
    key = generate_signing_key("ES256")
    assert "private" not in repr(key).lower()
    assert "EllipticCurvePrivateKey" not in repr(key)


def test_unsupported_algorithm() -> None:
    with pytest.raises(ValueError, match="HS256"):
        generate_signing_key("HS256")


class TestRotation:
    """The state machine with cheap fake keys: only kids matter here."""

    @staticmethod
    def ring() -> KeyRing:
        counter = itertools.count(1)

        def fake(alg: str) -> SigningKey:
            kid = f"k{next(counter)}"
            return SigningKey(kid, alg, {"kty": "OKP", "kid": kid}, private_key=None)  # type: ignore[arg-type]

        return KeyRing("EdDSA", key_factory=fake)

    def test_starts_with_one_current_key(self) -> None:
        ring = self.ring()
        assert ring.kids == ["k1"]
        assert ring.current.kid == "k1"

    def test_rotate_adds_a_new_current_and_keeps_the_old(self) -> None:
        ring = self.ring()
        assert ring.rotate().kid == "k2"
        assert ring.current.kid == "k2"
        assert ring.kids == ["k1", "k2"]
        assert [k["kid"] for k in ring.jwks()["keys"]] == ["k1", "k2"]

    def test_retire_keeps_only_current(self) -> None:
        ring = self.ring()
        ring.rotate()
        ring.rotate()
        assert ring.retire() == ["k1", "k2"]
        assert ring.kids == ["k3"]
        assert ring.current.kid == "k3"

    def test_retire_with_one_key_is_a_no_op(self) -> None:
        ring = self.ring()
        assert ring.retire() == []
        assert ring.kids == ["k1"]

    def test_rotate_after_retire(self) -> None:
        ring = self.ring()
        ring.rotate()
        ring.retire()
        ring.rotate()
        assert ring.kids == ["k2", "k3"]

    def test_rotate_refuses_a_reused_key_or_another_algorithm(self) -> None:
        ring = self.ring()
        with pytest.raises(ValueError, match="already"):
            ring.rotate(ring.current)
        with pytest.raises(ValueError, match="ES256"):
            ring.rotate(generate_signing_key("ES256"))
