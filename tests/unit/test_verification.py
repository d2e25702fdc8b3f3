"""Pure verification: every rule, with the exact error class it raises."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from piigate.errors import (
    TokenAlgorithmNotAllowed,
    TokenAudienceInvalid,
    TokenClaimInvalid,
    TokenClaimMissing,
    TokenExpired,
    TokenHeaderForbidden,
    TokenIssuedInFuture,
    TokenIssuerUnknown,
    TokenKeyUnknown,
    TokenLifetimeExcessive,
    TokenMalformed,
    TokenNotYetValid,
    TokenRejected,
    TokenSignatureInvalid,
    TokenTooLarge,
    TokenTooOld,
    TokenTypeInvalid,
)
from piigate.tokens.jws import peek, peek_issuer, verify_jws, verify_signature
from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, KeySet, parse_jwks
from piigate.tokens.verification import (
    IssuerPolicy,
    TypRule,
    VerifiedToken,
    check_times,
    claim_dates,
    verify,
)
from tests.support.jwt_factory import (
    KeyPair,
    b64,
    ec_keypair,
    ed25519_keypair,
    hmac_token,
    jwks_bytes,
    make_token,
    raw_token,
    rsa_keypair,
)

NOW = 1_700_000_000
ISSUER = "https://auth.example.com/"
API = "https://api.example.com"
LEEWAY = 30

RSA = rsa_keypair("rsa-1")
PSS = rsa_keypair("rsa-ps", alg="PS256")
EC = ec_keypair("ec-1")
EC384 = ec_keypair("ec-384", curve="P-384")
ED = ed25519_keypair("ed-1")
ATTACKER = KeyPair(rsa_keypair("attacker").private_key, "rsa-1", "RS256")

ALL_ALGORITHMS = tuple(sorted(ASYMMETRIC_ALGORITHMS))
KEYS = parse_jwks(jwks_bytes(RSA, PSS, EC, EC384, ED), ALL_ALGORITHMS)


def policy(**overrides: Any) -> IssuerPolicy:
    settings: dict[str, Any] = {
        "name": "auth0",
        "issuer": ISSUER,
        "algorithms": ("RS256", "PS256", "ES256", "EdDSA"),
        "audiences": (API,),
        "leeway_s": LEEWAY,
        "max_lifetime_s": 24 * 3600,
        "max_age_s": 24 * 3600,
        "typ_rule": TypRule.AT_JWT,
    }
    settings.update(overrides)
    return IssuerPolicy(**settings)


def claims(**overrides: Any) -> dict[str, Any]:
    """Access-token claims; an override of None removes the claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "google-oauth2|100614615268183779229",
        "aud": [API, "https://examplecom.us.auth0.com/userinfo"],
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "jti": "jti-1",
        "scope": "openid read:pii",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def token(
    key: KeyPair = RSA, headers: Mapping[str, Any] | None = None, **claim_overrides: Any
) -> str:
    return make_token(claims(**claim_overrides), key, headers)


def check(
    tok: str, *, keys: KeySet = KEYS, now: float = NOW, **policy_overrides: Any
) -> VerifiedToken:
    return verify(tok, keys, policy(**policy_overrides), now)


def rejects(error: type[TokenRejected], tok: str, **kwargs: Any) -> TokenRejected:
    with pytest.raises(error) as caught:
        check(tok, **kwargs)
    assert type(caught.value) is error, repr(caught.value)
    assert_metadata_clean(caught.value, tok)
    return caught.value


def assert_metadata_clean(error: TokenRejected, tok: str) -> None:
    """No token text, no claim values: only names, short kids, alg names, config names."""
    for value in error.metadata.values():
        assert len(value) <= 64
        assert value not in tok.split(".")
        assert "google-oauth2" not in value
        assert value not in (ISSUER, API)


# --- happy paths -------------------------------------------------------------------------
@pytest.mark.parametrize("key", [RSA, PSS, EC, ED], ids=["RS256", "PS256", "ES256", "EdDSA"])
def test_valid_token_verifies(key: KeyPair) -> None:
    verified = check(token(key))
    assert verified.issuer_name == "auth0"
    assert verified.issuer == ISSUER
    assert verified.subject == "google-oauth2|100614615268183779229"
    assert verified.audiences == (API, "https://examplecom.us.auth0.com/userinfo")
    assert verified.jti == "jti-1"
    assert verified.expires_at == NOW + 3600
    assert verified.header["alg"] == key.alg
    assert verified.claims["scope"] == "openid read:pii"


def test_rsa_key_without_alg_verifies_rs256_and_ps256() -> None:
    unpinned = rsa_keypair("rsa-unpinned")
    keys = parse_jwks(jwks_bytes(unpinned.jwk(alg=None)), ALL_ALGORITHMS)
    check(token(unpinned), keys=keys)
    check(token(unpinned.with_alg("PS256")), keys=keys)


def test_verified_token_is_read_only_all_the_way_down() -> None:
    verified = check(token(permissions=["read:api"], nested={"a": [1, {"b": 2}]}))
    with pytest.raises(TypeError):
        verified.claims["sub"] = "someone-else"  # type: ignore[index]
    assert verified.claims["permissions"] == ("read:api",)
    with pytest.raises(TypeError):
        verified.claims["nested"]["a"][1]["b"] = 3
    with pytest.raises(AttributeError):
        verified.issuer_name = "x"  # type: ignore[misc]


def test_namespaced_claim_is_one_opaque_key() -> None:
    verified = check(make_token(claims(**{"https://example.com/pii_token": "3e84e552"}), RSA))
    assert verified.claims["https://example.com/pii_token"] == "3e84e552"


def test_single_key_set_accepts_token_without_kid() -> None:
    lone = rsa_keypair(None)
    keys = parse_jwks(jwks_bytes(lone), ALL_ALGORITHMS)
    check(token(lone), keys=keys)
    keys_with_kid = parse_jwks(jwks_bytes(RSA), ALL_ALGORITHMS)
    check(make_token(claims(), RSA, {"kid": None}), keys=keys_with_kid)


def test_verify_signature_returns_header_and_claims() -> None:
    header, payload = verify_signature(token(), KEYS, ["RS256"])
    assert header["kid"] == "rsa-1"
    assert payload["iss"] == ISSUER


def test_verify_jws_accepts_non_json_payload() -> None:
    jws = raw_token('{"alg":"ES256","kid":"ec-1"}', b"\x00\x01 not json", EC)
    header, payload = verify_jws(jws, KEYS, ["ES256"])
    assert payload == b"\x00\x01 not json"
    assert header["alg"] == "ES256"


# --- algorithm ---------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused_in_every_spelling(alg: str) -> None:
    unsigned = raw_token(
        json.dumps({"alg": alg, "kid": "rsa-1", "typ": "at+jwt"}), json.dumps(claims()), None
    )
    rejects(TokenAlgorithmNotAllowed, unsigned)
    rejects(TokenAlgorithmNotAllowed, unsigned + "c2ln")  # with some signature bytes
    with pytest.raises(TokenAlgorithmNotAllowed):
        verify_jws(unsigned, KEYS, [alg, "RS256"])  # even if a caller lists it


def _rsa_public_forms() -> dict[str, bytes]:
    public = RSA.public_key
    return {
        "pem": public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        "pem_pkcs1": public.public_bytes(Encoding.PEM, PublicFormat.PKCS1),
        "der": public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo),
        "jwk": RSAAlgorithm.to_jwk(public).encode(),
        "jwks_entry": json.dumps(RSA.jwk()).encode(),
    }


@pytest.mark.parametrize("form", sorted(_rsa_public_forms()))
def test_hs256_signed_with_the_rsa_public_key_is_refused(form: str) -> None:
    forged = hmac_token(claims(), _rsa_public_forms()[form], {"kid": "rsa-1"})
    rejects(TokenAlgorithmNotAllowed, forged)
    with pytest.raises(TokenAlgorithmNotAllowed):
        verify_jws(forged, KEYS, ["HS256", "RS256"])


def test_policy_refuses_symmetric_or_none_algorithms() -> None:
    for algorithms in (("HS256",), ("RS256", "none"), ("HS512", "RS256"), ()):
        with pytest.raises(ValueError, match="algorithm"):
            policy(algorithms=algorithms)


@pytest.mark.parametrize("alg", ["RS512", "rs256", "RS256 ", "ES256K", "Ed448", ""])
def test_algorithm_outside_the_allowlist_is_refused(alg: str) -> None:
    tok = make_token(claims(), RSA, alg="RS256", headers={"alg": alg})
    rejects(TokenAlgorithmNotAllowed, tok)


def test_missing_or_non_string_alg_is_refused() -> None:
    for header in ({"kid": "rsa-1"}, {"alg": ["RS256"], "kid": "rsa-1"}, {"alg": None}):
        tok = raw_token(json.dumps(header), json.dumps(claims()), RSA, alg="RS256")
        rejects(TokenAlgorithmNotAllowed, tok)


@pytest.mark.parametrize(
    ("signer", "header_alg", "kid", "algorithms"),
    [
        (EC, "RS256", "ec-1", ("RS256", "ES256")),  # RSA alg, EC key
        (RSA, "ES256", "rsa-1", ("RS256", "ES256")),  # EC alg, RSA key
        (EC, "ES384", "ec-1", ("ES256", "ES384")),  # P-384 alg, P-256 key
        (EC384, "ES256", "ec-384", ("ES256", "ES384")),  # P-256 alg, P-384 key
        (RSA, "EdDSA", "rsa-1", ("RS256", "EdDSA")),  # OKP alg, RSA key
        (ED, "ES256", "ed-1", ("ES256", "EdDSA")),  # EC alg, OKP key
        (RSA, "PS256", "rsa-1", ("RS256", "PS256")),  # JWK pinned to RS256
        (PSS, "RS256", "rsa-ps", ("RS256", "PS256")),  # JWK pinned to PS256
    ],
)
def test_algorithm_must_fit_the_key(
    signer: KeyPair, header_alg: str, kid: str, algorithms: tuple[str, ...]
) -> None:
    # Signed for real under the header's algorithm wherever the key can do that, so only
    # the key binding (not a bad signature) can be what refuses it.
    rsa_pair = signer.alg in ("RS256", "PS256") and header_alg in ("RS256", "PS256")
    forged = raw_token(
        json.dumps({"alg": header_alg, "kid": kid, "typ": "at+jwt"}),
        json.dumps(claims()),
        signer,
        alg=header_alg if rsa_pair else signer.alg,
    )
    rejects(TokenAlgorithmNotAllowed, forged, algorithms=algorithms)


def test_key_binding_holds_without_the_jwk_alg() -> None:
    unpinned_ec = ec_keypair("ec-unpinned")
    keys = parse_jwks(jwks_bytes(unpinned_ec.jwk(alg=None)), ALL_ALGORITHMS)
    forged = raw_token(
        json.dumps({"alg": "ES384", "kid": "ec-unpinned", "typ": "at+jwt"}),
        json.dumps(claims()),
        unpinned_ec,
        alg="ES384",
    )
    rejects(TokenAlgorithmNotAllowed, forged, keys=keys, algorithms=("ES256", "ES384"))
    check(token(unpinned_ec), keys=keys)


# --- key ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "' OR '1'='1",
        "rsa-1' --",
        "rsa-1\x00",
        "RSA-1",
        "rsa-1 ",
        "",
        "x" * 129,
        "x" * 4000,
        "/dev/null",
        "http://attacker.example/jwks.json",
    ],
)
def test_kid_is_only_an_exact_lookup_key(kid: str) -> None:
    error = rejects(TokenKeyUnknown, token(headers={"kid": kid}))
    if kid in ("RSA-1",):
        assert error.metadata.get("kid") == kid
    else:
        assert "kid" not in error.metadata  # unsafe or long kids are not recorded


def test_non_string_kid_is_malformed() -> None:
    rejects(TokenMalformed, token(headers={"kid": 1}))
    rejects(TokenMalformed, token(headers={"kid": ["rsa-1"]}))
    null_kid = raw_token('{"alg":"RS256","kid":null,"typ":"at+jwt"}', json.dumps(claims()), RSA)
    rejects(TokenMalformed, null_kid)


def test_token_without_kid_is_refused_when_the_set_has_several_keys() -> None:
    rejects(TokenKeyUnknown, make_token(claims(), RSA, {"kid": None}))


# --- signature ---------------------------------------------------------------------------
def test_foreign_signature_is_refused() -> None:
    error = rejects(TokenSignatureInvalid, token(ATTACKER))
    assert error.metadata["kid"] == "rsa-1"
    assert error.metadata["issuer"] == "auth0"


def test_stripped_signature_is_refused() -> None:
    header, payload, _ = token().split(".")
    rejects(TokenSignatureInvalid, f"{header}.{payload}.")


def test_signature_from_another_token_is_refused() -> None:
    header, payload, _ = token(sub="victim").split(".")
    signature = token(sub="attacker").split(".")[2]
    rejects(TokenSignatureInvalid, f"{header}.{payload}.{signature}")


def test_modified_payload_is_refused() -> None:
    header, _, signature = token().split(".")
    payload = b64(json.dumps(claims(sub="admin")))
    rejects(TokenSignatureInvalid, f"{header}.{payload}.{signature}")


def test_ecdsa_all_zero_signature_is_refused() -> None:
    header, payload, _ = token(EC).split(".")
    rejects(TokenSignatureInvalid, f"{header}.{payload}.{b64(bytes(64))}")


# --- forbidden headers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jwk", RSA.jwk()),
        ("jwk", ATTACKER.jwk()),
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB"]),
        ("crit", ["exp"]),
        ("crit", ["b64"]),
        ("b64", False),
        ("b64", True),
    ],
)
def test_forbidden_headers_are_refused(name: str, value: Any) -> None:
    error = rejects(TokenHeaderForbidden, token(ATTACKER, headers={name: value}))
    assert error.metadata["header"] == name


def test_b64_false_with_crit_is_refused() -> None:
    tok = token(headers={"b64": False, "crit": ["b64"]})
    error = rejects(TokenHeaderForbidden, tok)
    assert error.metadata["header"] in {"b64", "crit"}


# --- structure ---------------------------------------------------------------------------
def _segments() -> list[str]:
    return token().split(".")


def _non_canonical(segment: str) -> str:
    """The same bytes with non-zero unused trailing bits (valid to lenient decoders)."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}[len(segment) % 4]
    last = alphabet.index(segment[-1])
    return segment[:-1] + alphabet[last | ((1 << unused_bits) - 1)]


def _padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4 or 4)


def _structural_cases() -> dict[str, str]:
    h, p, s = _segments()
    header_bytes = base64.urlsafe_b64decode(h + "==")
    not_object = b64(b"[1,2]")
    a_string = b64(b'"just a string"')
    not_utf8 = b64(b"\xff\xfe{}")
    with_bom = b64(b"\xef\xbb\xbf" + header_bytes)
    truncated = s[: len(s) - len(s) % 4] + "A"  # length = 1 (mod 4): no byte boundary
    cases = {
        "empty": "",
        "one_segment": h,
        "two_segments": f"{h}.{p}",
        "four_segments": f"{h}.{p}.{s}.{s}",
        "jwe_five_segments": f"{h}.{b64(b'k' * 256)}.{b64(b'iv' * 6)}.{p}.{b64(b't' * 16)}",
        "json_serialization": json.dumps({"payload": p, "protected": h, "signature": s}),
        "space_in_header": f"{h[:5]} {h[5:]}.{p}.{s}",
        "leading_space": f" {h}.{p}.{s}",
        "trailing_newline": f"{h}.{p}.{s}\n",
        "tab_in_signature": f"{h}.{p}.{s[:5]}\t{s[5:]}",
        "padded_payload": f"{h}.{_padded(p)}.{s}",
        "padded_signature": f"{h}.{p}.{_padded(s)}",
        "standard_alphabet": f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}",
        "non_ascii": f"{h}.{p}.{s}\u00e9",
        "empty_header": f".{p}.{s}",
        "empty_payload": f"{h}..{s}",
        "header_not_object": f"{not_object}.{p}.{s}",
        "payload_not_object": f"{h}.{a_string}.{s}",
        "header_not_utf8": f"{not_utf8}.{p}.{s}",
        "header_bom": f"{with_bom}.{p}.{s}",
        "bad_length": f"{h}.{p}.{truncated}",
    }
    if len(s) % 4 in (2, 3):
        cases["non_canonical_signature"] = f"{h}.{p}.{_non_canonical(s)}"
    if len(p) % 4 in (2, 3):
        cases["non_canonical_payload"] = f"{h}.{_non_canonical(p)}.{s}"
    return cases


@pytest.mark.parametrize("case", sorted(_structural_cases()))
def test_malformed_tokens_are_refused(case: str) -> None:
    tok = _structural_cases()[case]
    if tok == token():  # a mutation that changed nothing would prove nothing
        pytest.fail(f"case {case} did not change the token")
    rejects(TokenMalformed, tok)


def test_non_canonical_base64_is_refused() -> None:
    # A segment whose length leaves unused bits: find one deterministically.
    for sub in ("a", "ab", "abc", "abcd"):
        h, p, s = make_token(claims(sub=sub), RSA).split(".")
        if len(p) % 4 in (2, 3):
            rejects(TokenMalformed, f"{h}.{_non_canonical(p)}.{s}")
            return
    pytest.fail("no payload length with unused bits found")


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ('{"alg":"RS256","kid":"rsa-1","typ":"at+jwt","alg":"RS256"}', None),
        ('{"alg":"RS256","kid":"other","typ":"at+jwt","kid":"rsa-1"}', None),
        (None, '{"iss":"ISS","sub":"a","sub":"b","aud":"API","iat":IAT,"exp":EXP}'),
        (None, '{"iss":"ISS","sub":"a","aud":"API","iat":IAT,"exp":1,"exp":EXP}'),
        (None, '{"iss":"ISS","sub":"a","aud":"API","iat":IAT,"exp":EXP,"x":{"y":1,"y":2}}'),
    ],
)
def test_duplicate_json_members_are_refused(header: str | None, payload: str | None) -> None:
    header = header or '{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}'
    payload = (
        (payload or '{"iss":"ISS","sub":"a","aud":"API","iat":IAT,"exp":EXP}')
        .replace("ISS", ISSUER)
        .replace("API", API)
        .replace("IAT", str(NOW))
        .replace("EXP", str(NOW + 60))
    )
    rejects(TokenMalformed, raw_token(header, payload, RSA))


def test_oversized_token_is_refused_before_parsing() -> None:
    big = token(padding="x" * 9000)
    assert len(big) > 8192
    rejects(TokenTooLarge, big)
    rejects(TokenTooLarge, "A" * 8193)  # not even a JWT: size first


def test_size_limit_is_inclusive_and_per_policy() -> None:
    tok = token()
    check(tok, max_token_bytes=len(tok))
    rejects(TokenTooLarge, tok, max_token_bytes=len(tok) - 1)


# --- issuer ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "iss",
    [
        "https://auth.example.com",
        "https://auth.example.com.evil/",
        "https://auth.example.com/evil",
        "https://auth.example.com//",
        "HTTPS://AUTH.EXAMPLE.COM/",
        " https://auth.example.com/",
        "https://auth.example.com/\u200b",
        "http://auth.example.com/",
    ],
)
def test_issuer_must_match_exactly(iss: str) -> None:
    error = rejects(TokenIssuerUnknown, token(iss=iss))
    assert error.metadata == {"issuer": "auth0"}


def test_issuer_without_trailing_slash_policy() -> None:
    no_slash = "https://auth.example.com"
    check(token(iss=no_slash), issuer=no_slash)
    rejects(TokenIssuerUnknown, token(iss=ISSUER), issuer=no_slash)


def test_missing_or_non_string_iss() -> None:
    error = rejects(TokenClaimMissing, token(iss=None))
    assert error.metadata["claim"] == "iss"
    error = rejects(TokenClaimInvalid, token(iss=["https://auth.example.com/"]))
    assert error.metadata["claim"] == "iss"


# --- typ rules ---------------------------------------------------------------------------
TOKEN_KINDS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # name: (header overrides, claim overrides)
    "rfc9068_at_jwt": ({"typ": "at+jwt"}, {}),
    "rfc9068_application_at_jwt": ({"typ": "application/at+jwt"}, {}),
    "rfc9068_upper_case": ({"typ": "AT+JWT"}, {}),
    "auth0_plain_jwt": ({"typ": "JWT"}, {}),
    "no_typ": ({"typ": None}, {}),
    "oidc_id_token": ({"typ": "JWT"}, {"nonce": "n", "aud": API}),
    "keycloak_access": ({"typ": "JWT"}, {"typ": "Bearer"}),
    "keycloak_id": ({"typ": "JWT"}, {"typ": "ID"}),
    "keycloak_refresh": ({"typ": "JWT"}, {"typ": "Refresh"}),
    "cognito_access": ({"typ": None}, {"token_use": "access"}),
    "cognito_id": ({"typ": None}, {"token_use": "id"}),
    "logout_token": ({"typ": "logout+jwt"}, {}),
    "dpop_proof": ({"typ": "dpop+jwt"}, {}),
    "non_string_typ": ({"typ": 1}, {}),
}
ACCEPTED_KINDS = {
    TypRule.AT_JWT: {"rfc9068_at_jwt", "rfc9068_application_at_jwt", "rfc9068_upper_case"},
    # ANY cannot tell a bare OIDC ID token from an access token by type: the audience
    # check (an ID token's aud is the client id) is what stops it there.
    TypRule.ANY: {
        "rfc9068_at_jwt",
        "rfc9068_application_at_jwt",
        "rfc9068_upper_case",
        "auth0_plain_jwt",
        "no_typ",
        "oidc_id_token",
        "keycloak_access",
        "cognito_access",
        "keycloak_refresh",
    },
    TypRule.KEYCLOAK: {"keycloak_access"},
    TypRule.COGNITO: {"cognito_access"},
}


@pytest.mark.parametrize("rule", list(TypRule), ids=lambda rule: rule.name)
@pytest.mark.parametrize("kind", sorted(TOKEN_KINDS))
def test_typ_rules(rule: TypRule, kind: str) -> None:
    header, claim_overrides = TOKEN_KINDS[kind]
    tok = make_token(claims(**claim_overrides), RSA, header)
    if kind in ACCEPTED_KINDS[rule]:
        check(tok, typ_rule=rule)
    else:
        rejects(TokenTypeInvalid, tok, typ_rule=rule)


def test_id_token_audience_stops_it_under_typ_any() -> None:
    id_token = make_token(claims(aud="client-id-123", nonce="n"), RSA, {"typ": "JWT"})
    rejects(TokenAudienceInvalid, id_token, typ_rule=TypRule.ANY)


# --- required claims and types ------------------------------------------------------------
@pytest.mark.parametrize("name", ["sub", "exp", "iat"])
def test_required_claims_must_be_present(name: str) -> None:
    error = rejects(TokenClaimMissing, make_token(claims(**{name: None}), RSA))
    assert error.metadata["claim"] == name


def test_configured_required_claim() -> None:
    pii_claim = "https://example.com/pii_token"
    required = ("iss", "sub", "exp", "iat", pii_claim)
    error = rejects(TokenClaimMissing, token(), required_claims=required)
    assert error.metadata["claim"] == pii_claim
    check(make_token(claims(**{pii_claim: "3e84"}), RSA), required_claims=required)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp", "9999999999"),
        ("exp", str(NOW + 60)),
        ("exp", 1e300),
        ("exp", 10**20),
        ("exp", True),
        ("exp", -1),
        ("exp", [NOW + 60]),
        ("exp", {"v": NOW}),
        ("iat", "now"),
        ("iat", False),
        ("nbf", [NOW]),
        ("nbf", 1e300),
        ("sub", ""),
        ("sub", 12345),
        ("sub", ["a"]),
        ("jti", 7),
        ("jti", ""),
        ("aud", [API, 1]),
        ("aud", {"aud": API}),
        ("aud", 1),
        ("aud", [[API]]),
    ],
)
def test_claim_types(name: str, value: Any) -> None:
    error = rejects(TokenClaimInvalid, make_token(claims(**{name: value}), RSA))
    assert error.metadata["claim"] == name


def test_exp_null_is_invalid_not_missing() -> None:
    tok = raw_token(
        '{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}',
        json.dumps({**claims(), "exp": None}),
        RSA,
    )
    error = rejects(TokenClaimInvalid, tok)
    assert error.metadata["claim"] == "exp"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_constants_are_malformed(literal: str) -> None:
    payload = json.dumps(claims(exp=0)).replace('"exp": 0', f'"exp": {literal}')
    assert literal in payload
    rejects(TokenMalformed, raw_token('{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}', payload, RSA))


def test_overflowing_number_is_an_invalid_claim() -> None:
    payload = json.dumps(claims(exp=0)).replace('"exp": 0', '"exp": 1e400')  # parses to inf
    tok = raw_token('{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}', payload, RSA)
    error = rejects(TokenClaimInvalid, tok)
    assert error.metadata["claim"] == "exp"


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "literal", ["1e400", "-1e400", "1" + "0" * 400, "-1" + "0" * 400, "1" + "0" * 4000]
)
def test_numbers_beyond_float_are_invalid_claims_not_overflows(name: str, literal: str) -> None:
    # An issuer-signed token: huge JSON integers do not fit a float (math.isfinite and
    # float() raise OverflowError on them), and 1e400 parses to inf.
    payload = json.dumps(claims(**{name: 0})).replace(f'"{name}": 0', f'"{name}": {literal}')
    assert literal in payload
    tok = raw_token('{"alg":"RS256","kid":"rsa-1","typ":"at+jwt"}', payload, RSA)
    error = rejects(TokenClaimInvalid, tok)
    assert error.metadata["claim"] == name


def test_fractional_times_are_numbers() -> None:
    assert check(token(exp=NOW + 60.5, iat=NOW - 0.25)).expires_at == NOW + 60.5


# --- times at the leeway boundary --------------------------------------------------------
EXP = NOW + 600
TIME_CASES: list[tuple[str, dict[str, Any], float, type[TokenRejected] | None]] = [
    ("exp_inside_leeway_-1s", {"exp": EXP}, EXP + LEEWAY - 1, None),
    ("exp_at_leeway", {"exp": EXP}, EXP + LEEWAY, None),
    ("exp_past_leeway_+1s", {"exp": EXP}, EXP + LEEWAY + 1, TokenExpired),
    ("exp_long_past", {"exp": NOW - 3600, "iat": NOW - 7200}, NOW, TokenExpired),
    ("nbf_at_leeway", {"nbf": NOW + LEEWAY}, NOW, None),
    ("nbf_inside_leeway_-1s", {"nbf": NOW + LEEWAY - 1}, NOW, None),
    ("nbf_past_leeway_+1s", {"nbf": NOW + LEEWAY + 1}, NOW, TokenNotYetValid),
    ("iat_at_leeway", {"iat": NOW + LEEWAY}, NOW, None),
    ("iat_inside_leeway_-1s", {"iat": NOW + LEEWAY - 1}, NOW, None),
    ("iat_past_leeway_+1s", {"iat": NOW + LEEWAY + 1}, NOW, TokenIssuedInFuture),
]


@pytest.mark.parametrize(
    ("overrides", "now", "error"),
    [case[1:] for case in TIME_CASES],
    ids=[case[0] for case in TIME_CASES],
)
def test_time_boundaries(
    overrides: dict[str, Any], now: float, error: type[TokenRejected] | None
) -> None:
    tok = token(**overrides)
    if error is None:
        check(tok, now=now)
    else:
        rejects(error, tok, now=now)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"nbf": NOW - 5}, {"iat": NOW - 500}, {"exp": NOW + 60.5, "iat": NOW - 0.25}],
    ids=["plain", "nbf", "older", "fractional"],
)
@pytest.mark.parametrize("max_age_s", [None, 600])
def test_time_only_recheck_agrees_with_full_verification(
    overrides: dict[str, Any], max_age_s: int | None
) -> None:
    """The verified-token cache re-runs only the time checks on a hit; at every instant
    that must give full verification's verdict (same error type, or none)."""
    tok = token(**overrides)
    rules = policy(max_age_s=max_age_s)
    dates = claim_dates(verify(tok, KEYS, rules, NOW))
    for offset in (-7200, -1, 0, 1, 99, 100, 101, 539, 540, 541, 599, 600, 601, 3630, 3631):
        now = NOW + offset
        try:
            verify(tok, KEYS, rules, now)
            expected: type[TokenRejected] | None = None
        except TokenRejected as exc:
            expected = type(exc)
        try:
            check_times(dates, rules, now)
            found: type[TokenRejected] | None = None
        except TokenRejected as exc:
            found = type(exc)
        assert found is expected, (offset, found, expected)


def test_zero_leeway() -> None:
    check(token(exp=NOW), now=NOW, leeway_s=0)
    rejects(TokenExpired, token(exp=NOW), now=NOW + 1, leeway_s=0)


@pytest.mark.parametrize(
    ("lifetime", "error"),
    [(3600, None), (3601, TokenLifetimeExcessive), (10 * 365 * 86400, TokenLifetimeExcessive)],
)
def test_lifetime_cap(lifetime: int, error: type[TokenRejected] | None) -> None:
    tok = token(iat=NOW - 10, exp=NOW - 10 + lifetime)
    if error is None:
        check(tok, max_lifetime_s=3600)
    else:
        rejects(error, tok, max_lifetime_s=3600)


@pytest.mark.parametrize(("age", "error"), [(600, None), (601, TokenTooOld)])
def test_age_cap(age: int, error: type[TokenRejected] | None) -> None:
    tok = token(iat=NOW - age, exp=NOW + 60)
    if error is None:
        check(tok, max_age_s=600)
    else:
        rejects(error, tok, max_age_s=600)


def test_ten_year_old_iat_is_too_old() -> None:
    rejects(TokenTooOld, token(iat=NOW - 10 * 365 * 86400, exp=NOW + 60), max_lifetime_s=None)


def test_no_caps_configured() -> None:
    check(token(iat=NOW - 86400 * 30, exp=NOW + 86400 * 30), max_lifetime_s=None, max_age_s=None)


# --- audience ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("aud", "error"),
    [
        (API, None),
        ([API], None),
        (["other", API], None),
        (None, TokenAudienceInvalid),
        ("", TokenAudienceInvalid),
        ([], TokenAudienceInvalid),
        ("https://api.example.com/", TokenAudienceInvalid),
        ("https://api.example.com.evil", TokenAudienceInvalid),
        (["other", "account"], TokenAudienceInvalid),
        (API.upper(), TokenAudienceInvalid),
    ],
)
def test_audience(aud: Any, error: type[TokenRejected] | None) -> None:
    tok = token(aud=aud) if aud is not None else token(aud=None)
    if error is None:
        check(tok)
    else:
        rejects(error, tok)


def test_audience_not_checked_when_policy_lists_none() -> None:
    verified = check(token(aud=None), audiences=())
    assert verified.audiences == ()
    check(token(aud="anything"), audiences=())


def test_any_of_several_policy_audiences() -> None:
    check(token(aud="second"), audiences=("first", "second"))


# --- order of checks ---------------------------------------------------------------------
def test_order_size_before_structure_before_headers_before_alg() -> None:
    huge_and_malformed = "!" * 9000
    rejects(TokenTooLarge, huge_and_malformed)
    forbidden_and_none = raw_token('{"alg":"none","jku":"https://x"}', json.dumps(claims()), None)
    rejects(TokenHeaderForbidden, forbidden_and_none)
    dup_payload_and_forbidden = raw_token('{"alg":"RS256","jwk":{}}', '{"sub":"a","sub":"b"}', RSA)
    rejects(TokenMalformed, dup_payload_and_forbidden)


def test_order_signature_before_claims() -> None:
    forged_expired = token(ATTACKER, exp=NOW - 3600, iss="https://evil/")
    rejects(TokenSignatureInvalid, forged_expired)


def test_order_issuer_type_required_types_times_audience() -> None:
    rejects(TokenIssuerUnknown, make_token(claims(iss="x", exp="bad"), RSA, {"typ": "JWT"}))
    rejects(TokenTypeInvalid, make_token(claims(sub=None), RSA, {"typ": "JWT"}))
    rejects(TokenClaimMissing, token(sub=None, exp="bad"))
    rejects(TokenClaimInvalid, token(exp="bad", aud="other"))
    rejects(TokenExpired, token(exp=NOW - 3600, iat=NOW - 7200, aud="other"))


# --- peek --------------------------------------------------------------------------------
def test_peek_issuer_returns_the_unverified_iss() -> None:
    assert peek_issuer(token(ATTACKER), 8192) == ISSUER
    identity = peek(token(EC), 8192)
    assert (identity.issuer, identity.kid) == (ISSUER, "ec-1")
    assert peek(make_token(claims(), RSA, {"kid": 5}), 8192).kid is None


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: token(iss=None), TokenClaimMissing),
        (lambda: token(iss=5), TokenClaimInvalid),
        (lambda: token(iss=""), TokenClaimInvalid),
        (lambda: token() + "=", TokenMalformed),
        (lambda: "a.b", TokenMalformed),
        (lambda: "A" * 9000, TokenTooLarge),
        (
            lambda: raw_token(
                '{"alg":"RS256"}', f'{{"iss":"{ISSUER}","iss":"https://evil/"}}', RSA
            ),
            TokenMalformed,
        ),
    ],
)
def test_peek_issuer_refuses(make: Callable[[], str], error: type[TokenRejected]) -> None:
    with pytest.raises(error):
        peek_issuer(make(), 8192)


# --- policy validation -------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        {"leeway_s": 61},
        {"leeway_s": -1},
        {"required_claims": ("iss", "sub")},
        {"required_claims": ("iss", "exp")},
        {"required_claims": ("iss", "sub", "exp"), "max_age_s": 60, "max_lifetime_s": None},
        {"max_lifetime_s": 0},
        {"max_age_s": -5},
        {"name": ""},
        {"issuer": ""},
        {"audiences": ("",)},
        {"max_token_bytes": 0},
        {"max_token_bytes": 10**6},
    ],
)
def test_policy_validation(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        policy(**overrides)


@pytest.mark.parametrize("allowed", [("EdDSA",), ("Ed25519",), ("RS256", "Ed25519")])
@pytest.mark.parametrize("header_alg", ["EdDSA", "Ed25519"])
def test_ed25519_is_eddsa_by_its_rfc_9864_name(allowed: tuple[str, ...], header_alg: str) -> None:
    """RFC 9864: `Ed25519` names EdDSA over Ed25519, the only EdDSA piigate verifies; an
    allowlist naming either accepts a token naming either."""
    keys = parse_jwks(jwks_bytes(ED), allowed)
    tok = make_token(claims(), ED, headers={"alg": header_alg})
    assert check(tok, keys=keys, algorithms=allowed).header["alg"] == header_alg


@pytest.mark.parametrize("jwk_alg", ["EdDSA", "Ed25519"])
def test_a_jwk_pinned_to_either_name_verifies_both(jwk_alg: str) -> None:
    document = json.loads(jwks_bytes(ED))
    document["keys"][0]["alg"] = jwk_alg
    keys = parse_jwks(json.dumps(document).encode(), ("EdDSA",))
    for header_alg in ("EdDSA", "Ed25519"):
        tok = make_token(claims(), ED, headers={"alg": header_alg})
        assert check(tok, keys=keys, algorithms=("EdDSA",)).header["alg"] == header_alg


def test_the_ed25519_name_is_no_way_around_the_allowlist() -> None:
    tok = make_token(claims(), ED, headers={"alg": "Ed25519"})
    rejects(TokenAlgorithmNotAllowed, tok, algorithms=("RS256", "ES256"))
    rsa_keys_only = parse_jwks(jwks_bytes(RSA), ("RS256", "Ed25519"))
    forged = make_token(claims(), RSA, alg="RS256", headers={"alg": "Ed25519"})
    rejects(TokenAlgorithmNotAllowed, forged, keys=rsa_keys_only, algorithms=("RS256", "Ed25519"))
