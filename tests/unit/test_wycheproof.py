"""Project Wycheproof JWS and JWK vectors against `verify_jws` and `parse_jwks`.

The vectors are read in place from `../shared/testdata/wycheproof/` (never copied into the
repository); the module is skipped, saying why, when that folder is absent.

Their payloads are not access tokens ("foo", empty, binary), so they exercise the
structure + signature layer (`jws.verify_jws`, steps 1-7), not the claim checks.

Expected disagreements are listed by tcId with the reason; the tests assert that the set
of disagreements is exactly that list, so a regression (or a fix) fails loudly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from piigate.errors import TokenRejected
from piigate.tokens.jws import verify_jws
from piigate.tokens.keys import ASYMMETRIC_ALGORITHMS, JwksInvalid, KeySet, parse_jwks

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "wycheproof"
JWS_FILE = VECTORS / "json_web_signature_test.json"
JWK_FILE = VECTORS / "json_web_key_test.json"

pytestmark = pytest.mark.skipif(
    not (JWS_FILE.is_file() and JWK_FILE.is_file()),
    reason=f"Wycheproof vectors not found in {VECTORS} (CI keeps them beside the checkout)",
)

ALGORITHMS = tuple(sorted(ASYMMETRIC_ALGORITHMS))

# piigate never verifies symmetric (HS*) tokens and never loads `oct` keys (RFC 8725 §3.1,
# §3.2): these "valid" HMAC vectors are refused by design.
HMAC_BY_DESIGN = {
    "jws": {1, 348, 352, 357, 358, 359, 372, 373, 376, 377},
    "jwk": {2, 13, 14, 15},
}
# The JWK's own `alg` must equal the header `alg` (RFC 7517 §4.4; the brief's key-binding
# rule). These RFC 7520 vectors carry a key whose `alg` differs from the token's:
# 346/350: key alg PS256, token PS384; 347/351: key alg "ES521" (not a JWA name), token
# ES512. Wycheproof calls them valid; piigate refuses them.
ALG_PIN_BY_DESIGN = {346, 347, 350, 351}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _key_set(document: dict[str, Any] | None) -> KeySet | None:
    """parse_jwks over a group's key(s); None when nothing usable (=> every token fails)."""
    if document is None:
        return None
    if "keys" not in document:
        document = {"keys": [document]}
    try:
        return parse_jwks(json.dumps(document).encode(), ALGORITHMS)
    except JwksInvalid:
        return None


def _accepts(keys: KeySet | None, token: object) -> bool:
    if keys is None or not isinstance(token, str):
        return False
    try:
        verify_jws(token, keys, ALGORITHMS)
    except TokenRejected:
        return False
    return True


def _cases(path: Path, key_member: str) -> Iterator[tuple[dict[str, Any], KeySet | None]]:
    for group in _load(path)["testGroups"]:
        # A group without a public key only has a symmetric (or private) key: the keys
        # piigate would ever be given are the public ones, so use `public` when present
        # and otherwise the `private` set (which parse_jwks must refuse).
        keys = _key_set(group.get("public") or group.get(key_member))
        for test in group["tests"]:
            yield test, keys


def _disagreements(path: Path, key_member: str) -> tuple[set[int], Counter[str]]:
    disagree: set[int] = set()
    tally: Counter[str] = Counter()
    for test, keys in _cases(path, key_member):
        accepted = _accepts(keys, test["jws"])
        verdict = test["result"]
        if verdict == "acceptable":
            tally[f"acceptable_{'accepted' if accepted else 'refused'}"] += 1
        elif accepted == (verdict == "valid"):
            tally["agree"] += 1
        else:
            tally["disagree"] += 1
            disagree.add(test["tcId"])
    return disagree, tally


def test_jws_vectors_agree_except_documented_design_choices() -> None:
    disagree, tally = _disagreements(JWS_FILE, "private")
    assert disagree == HMAC_BY_DESIGN["jws"] | ALG_PIN_BY_DESIGN, tally
    assert tally["agree"] + tally["disagree"] == 401
    assert tally["agree"] == 401 - len(HMAC_BY_DESIGN["jws"]) - len(ALG_PIN_BY_DESIGN)


def test_every_invalid_jws_vector_is_refused() -> None:
    for test, keys in _cases(JWS_FILE, "private"):
        if test["result"] == "invalid":
            assert not _accepts(keys, test["jws"]), test["tcId"]


def test_every_asymmetric_valid_jws_vector_is_accepted() -> None:
    checked = 0
    for test, keys in _cases(JWS_FILE, "private"):
        excluded = HMAC_BY_DESIGN["jws"] | ALG_PIN_BY_DESIGN
        if test["result"] == "valid" and test["tcId"] not in excluded:
            assert _accepts(keys, test["jws"]), test["tcId"]
            checked += 1
    assert checked == 32


def test_jwk_vectors_agree_except_hmac() -> None:
    disagree, tally = _disagreements(JWK_FILE, "private")
    assert disagree == HMAC_BY_DESIGN["jwk"], tally
    assert tally["agree"] == 26 - len(HMAC_BY_DESIGN["jwk"])


def test_jwk_vectors_that_must_be_refused_at_load_time() -> None:
    """Key sets the JWK vectors call unusable are refused by parse_jwks itself, not only
    by failing signatures: duplicate kid, wrong use, small RSA, ROCA, e=1, invalid point,
    wrong curve, wrong kty, AES keys, mismatched or unknown `alg`. (A mixed symmetric set
    keeps its asymmetric keys: see the next test.)"""
    refused_at_load = {
        "jws_duplicate_kid",
        "keysize_too_small",
        "jws_rsa_roca_key",
        "exponentOne",
        "wrong_algorithm",
        "invalid_algorithm",
        "invalid_use",
        "invalid_point",
        "wrong_curve",
        "wrong_kty",
        "invalid_aes_gcm_key",
        "invalid_aes_kw_key",
    }
    seen = set()
    for group in _load(JWK_FILE)["testGroups"]:
        if group["comment"] in refused_at_load:
            document = group.get("public") or group["private"]
            with pytest.raises(JwksInvalid):
                parse_jwks(json.dumps(document).encode(), ALGORITHMS)
            seen.add(group["comment"])
    assert seen == refused_at_load


def test_a_mixed_symmetric_set_keeps_only_its_asymmetric_key() -> None:
    """keys.py R2: the `oct` entry is skipped and counted, never used; the EC key stays.
    The vector's token is refused all the same (see the JWK agreement test)."""
    groups = [g for g in _load(JWK_FILE)["testGroups"] if g["comment"] == "jws_mixedSymmetryKeyset"]
    assert len(groups) == 1
    document = groups[0].get("public") or groups[0]["private"]
    keys = parse_jwks(json.dumps(document).encode(), ALGORITHMS)
    assert list(keys) == ["kid-ec-sign"]
    assert keys.skipped == {"secret_key_material": 1}
