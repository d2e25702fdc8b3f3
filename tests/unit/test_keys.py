"""Pure key handling: parse_jwks filtering, Cache-Control TTLs, jwks_uri rules, settings."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ed448, x25519

from piigate.tokens.fetch import check_jwks_uri
from piigate.tokens.jwks import JwksCache, JwksCacheSettings, cache_ttl
from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, JwksInvalid, is_roca_weak, parse_jwks
from tests.support.jwt_factory import (
    b64,
    ec_keypair,
    ed25519_keypair,
    jwks,
    jwks_bytes,
    rsa_keypair,
)

ALL = tuple(sorted(ASYMMETRIC_ALGORITHMS))
RSA = rsa_keypair("rsa-1")
RSA2 = rsa_keypair("rsa-2")
EC = ec_keypair("ec-1")
ED = ed25519_keypair("ed-1")


def parse(*entries: Any, algorithms: tuple[str, ...] = ALL) -> Any:
    return parse_jwks(jwks_bytes(*entries), algorithms)


def detail_of(document: bytes, algorithms: tuple[str, ...] = ALL) -> str:
    with pytest.raises(JwksInvalid) as caught:
        parse_jwks(document, algorithms)
    return caught.value.detail


# --- accepted keys -----------------------------------------------------------------------
def test_parses_rsa_ec_and_ed25519_keys() -> None:
    keys = parse(RSA, EC, ED)
    assert sorted(k for k in keys if k) == ["ec-1", "ed-1", "rsa-1"]
    assert keys.get("rsa-1").algorithms == {"RS256"}  # pinned by its JWK alg
    assert keys.get("ec-1").algorithms == {"ES256"}
    assert keys.get("ed-1").algorithms == {"EdDSA", "Ed25519"}  # RFC 9864: one algorithm
    assert keys.get("ec-1").crv == "P-256"
    assert keys.fetched_at == 0.0


def test_unpinned_rsa_key_may_verify_every_allowed_rsa_algorithm() -> None:
    keys = parse(RSA.jwk(alg=None), algorithms=("RS256", "PS512", "ES256"))
    assert keys.get("rsa-1").algorithms == {"RS256", "PS512"}


def test_fingerprint_identifies_key_material() -> None:
    first, again, other = parse(RSA), parse(RSA.jwk(use=None)), parse(RSA2.jwk(kid="rsa-1"))
    assert first.get("rsa-1").fingerprint == again.get("rsa-1").fingerprint
    assert first.get("rsa-1").fingerprint != other.get("rsa-1").fingerprint


def test_key_set_is_read_only() -> None:
    keys = parse(RSA)
    with pytest.raises(TypeError):
        keys.keys["evil"] = keys.get("rsa-1")  # type: ignore[index,unused-ignore]


def test_kid_less_key_is_kept_under_none() -> None:
    keys = parse(rsa_keypair(None))
    assert list(keys) == [None]


@pytest.mark.parametrize(
    "extra",
    [{"use": "sig"}, {"use": None}, {"key_ops": ["verify"]}, {"key_ops": ["verify", "sign"]}],
)
def test_signature_keys_are_kept(extra: dict[str, Any]) -> None:
    assert "rsa-1" in parse(RSA.jwk(**extra), EC)


# --- skipped keys ------------------------------------------------------------------------
def _x25519_jwk() -> dict[str, Any]:
    raw = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    return {"kty": "OKP", "crv": "X25519", "x": b64(raw), "kid": "x"}


def _ed448_jwk() -> dict[str, Any]:
    raw = ed448.Ed448PrivateKey.generate().public_key().public_bytes_raw()
    return {"kty": "OKP", "crv": "Ed448", "x": b64(raw), "kid": "x"}


def _bad_point() -> dict[str, Any]:
    jwk = EC.jwk(kid="x")
    y = jwk["y"]
    jwk["y"] = y[:-2] + ("AA" if y[-2:] != "AA" else "AB")
    return jwk


SKIPPED: dict[str, Any] = {
    "use_enc": lambda: RSA2.jwk(kid="x", use="enc"),
    "use_non_string": lambda: RSA2.jwk(kid="x", use=["sig"]),
    "key_ops_encrypt": lambda: RSA2.jwk(kid="x", key_ops=["encrypt"]),
    "key_ops_not_list": lambda: RSA2.jwk(kid="x", key_ops="verify"),
    "rsa_1024": lambda: rsa_keypair("x", bits=1024).jwk(),
    "rsa_exponent_one": lambda: RSA2.jwk(kid="x", e="AQ"),
    "rsa_missing_n": lambda: RSA2.jwk(kid="x", n=None),
    "rsa_n_not_string": lambda: RSA2.jwk(kid="x", n=12345),
    "ec_point_off_curve": _bad_point,
    "ec_wrong_curve_name": lambda: EC.jwk(kid="x", crv="P-384", alg=None),
    "ec_secp256k1": lambda: EC.jwk(kid="x", crv="secp256k1", alg=None),
    "ec_alg_curve_mismatch": lambda: EC.jwk(kid="x", alg="ES384"),
    "okp_x25519": _x25519_jwk,
    "okp_ed448": _ed448_jwk,
    "rsa_alg_hs256": lambda: RSA2.jwk(kid="x", alg="HS256"),
    "rsa_alg_unknown": lambda: RSA2.jwk(kid="x", alg="RS1"),
    "rsa_alg_not_string": lambda: RSA2.jwk(kid="x", alg=["RS256"]),
    "kty_unknown": lambda: {**RSA2.jwk(kid="x"), "kty": "RSA-OAEP"},
    "kty_missing": lambda: RSA2.jwk(kid="x", kty=None),
    "kid_not_string": lambda: RSA2.jwk(kid=7),
    "kid_too_long": lambda: RSA2.jwk(kid="k" * 129),
    "kid_empty": lambda: RSA2.jwk(kid=""),
    "not_an_object": lambda: "rsa-key",
}


@pytest.mark.parametrize("case", sorted(SKIPPED))
def test_unusable_keys_are_skipped_and_the_rest_kept(case: str) -> None:
    keys = parse(SKIPPED[case](), EC)
    assert list(keys) == ["ec-1"]


def test_keys_the_allowed_algorithms_cannot_use_are_dropped() -> None:
    keys = parse(RSA, EC, ED, algorithms=("ES256",))
    assert list(keys) == ["ec-1"]
    assert detail_of(jwks_bytes(RSA), ("PS256",)) == "no_usable_keys"  # RSA pinned to RS256


def test_symmetric_algorithms_in_the_allowlist_change_nothing() -> None:
    keys = parse_jwks(jwks_bytes(RSA, EC), ("HS256", "none", "ES256"))
    assert list(keys) == ["ec-1"]


def test_generated_keys_are_not_roca_weak() -> None:
    assert not is_roca_weak(RSA.public_key.public_numbers().n)
    assert not is_roca_weak(RSA2.public_key.public_numbers().n)


# --- refused documents -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "detail"),
    [
        (b"", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"<html>", "not_json"),
        (b'{"keys": [NaN]}', "not_json"),
        (b"[]", "no_keys_array"),
        (b'{"keys": {}}', "no_keys_array"),
        (b'{"key": []}', "no_keys_array"),
        (b'{"keys": []}', "no_usable_keys"),
        (b'{"keys": [], "keys": []}', "duplicate_member"),
    ],
)
def test_unusable_documents_are_refused(document: bytes, detail: str) -> None:
    assert detail_of(document) == detail


def test_duplicate_kids_refuse_the_whole_set() -> None:
    assert detail_of(jwks_bytes(RSA, RSA2.jwk(kid="rsa-1"), EC)) == "duplicate_kid"
    # even when the second entry would itself be skipped (an encryption key)
    assert detail_of(jwks_bytes(RSA, RSA2.jwk(kid="rsa-1", use="enc"))) == "duplicate_kid"


def test_two_kid_less_keys_are_ambiguous() -> None:
    document = jwks_bytes(rsa_keypair(None), ec_keypair(None))
    assert detail_of(document) == "duplicate_kid"


def test_duplicate_member_inside_a_key_refuses_the_set() -> None:
    text = json.dumps(jwks(RSA)).replace('"kty": "RSA"', '"kty": "RSA", "kty": "EC"')
    assert detail_of(text.encode()) == "duplicate_member"


@pytest.mark.parametrize(
    "secret",
    [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "oct", "kid": "empty"},
        {**EC.jwk(kid="leaked"), "d": "AAAA"},
        {**RSA2.jwk(kid="leaked"), "p": "AQAB"},
    ],
)
def test_secret_material_is_skipped_counted_and_never_used(secret: dict[str, Any]) -> None:
    # R2: the entry is left out whole (not even a private key's public half is kept), the
    # skip is counted for the cache's log and health, and the set's other keys stay usable.
    keys = parse(RSA, secret)
    assert list(keys) == ["rsa-1"]
    assert secret["kid"] not in keys
    assert keys.skipped == {"secret_key_material": 1}


def test_a_set_of_secrets_only_has_no_usable_keys() -> None:
    oct_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}
    assert detail_of(jwks_bytes(oct_key, {**EC.jwk(kid="leaked"), "d": "AAAA"})) == (
        "no_usable_keys"
    )


def test_skips_are_counted_by_reason() -> None:
    keys = parse(RSA, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}, RSA2.jwk(use="enc"), "x")
    assert keys.skipped == {"secret_key_material": 1, "unusable": 2}
    assert parse(RSA).skipped == {}


def test_a_secret_entry_sharing_a_kid_still_refuses_the_set() -> None:
    # R3 counts skipped entries too: which key a kid names must never be ambiguous.
    assert detail_of(jwks_bytes(RSA, {"kty": "oct", "k": "c2VjcmV0", "kid": "rsa-1"})) == (
        "duplicate_kid"
    )


# --- Cache-Control -----------------------------------------------------------------------
SETTINGS = JwksCacheSettings(default_ttl_s=600, min_ttl_s=60, max_ttl_s=3600)


@pytest.mark.parametrize(
    ("header", "ttl"),
    [
        (None, 600),
        ("", 600),
        ("max-age=120", 120),
        ("public, max-age=300, must-revalidate", 300),
        ("MAX-AGE=200", 200),
        ('max-age="240"', 240),
        ("max-age=5", 60),
        ("max-age=0", 60),
        ("max-age=99999999", 3600),
        ("max-age=abc", 600),
        ("max-age=-5", 600),
        ("s-maxage=100", 600),
        ("no-store", 60),
        ("no-cache", 60),
        ("public", 600),
    ],
)
def test_cache_ttl(header: str | None, ttl: float) -> None:
    assert cache_ttl(header, SETTINGS) == ttl


# --- jwks_uri and settings ---------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    [
        "https://auth.example.com/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks",
        "http://localhost/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_accepted_jwks_uris(uri: str) -> None:
    assert str(check_jwks_uri(uri)) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "http://auth.example.com/jwks",
        "http://127.0.0.1.evil.example/jwks",
        "http://10.0.0.1/jwks",
        "ftp://auth.example.com/jwks",
        "file:///etc/jwks.json",
        "/relative/jwks",
        "https://user:secret@auth.example.com/jwks",
        "https:///jwks",
    ],
)
def test_refused_jwks_uris(uri: str) -> None:
    with pytest.raises(ValueError, match="jwks_uri"):
        check_jwks_uri(uri)


async def test_cache_refuses_plain_http_to_a_remote_host_at_construction() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="https"):
            JwksCache("http://auth.example.com/jwks", session, lambda: 0.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {"min_ttl_s": 0},
        {"min_ttl_s": 100, "max_ttl_s": 50},
        {"default_ttl_s": float("nan")},
        {"stale_if_error_s": -1},
        {"refresh_ahead_fraction": 0},
        {"max_response_bytes": 0},
        {"allowed_algorithms": ()},
        {"allowed_algorithms": ("HS256",)},
    ],
)
def test_settings_validation(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        JwksCacheSettings(**overrides)
