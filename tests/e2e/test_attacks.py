"""The token attack catalogue, through the real gRPC server: every case is a subject
token signed with the real issuer's real key (so only the attack itself can be what is
refused), and asserts the exact ErrorInfo reason the caller receives.

The gateway runs on a fixed clock so the leeway edges are exact to the second.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from piigate_dev import demo
from tests.support.jwt_factory import KeyPair, hmac_token, raw_token, rsa_keypair
from tests.support.stack import Stack, running_stack

NOW = 1_900_000_000.0
LEEWAY = 30  # the demo issuer's default
PII = "https://example.com/pii_token"


class Fixed:
    def __call__(self) -> float:
        return NOW


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env() -> AsyncIterator[tuple[Stack, AsyncDetokenizationClient, KeyPair]]:
    async with running_stack(clock=Fixed()) as stack:
        signing = stack.issuer.signer.keys.current
        key = KeyPair(signing.private_key, signing.kid, signing.alg)
        yield stack, await stack.caller("support-tool"), key


def claims(stack: Stack, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": stack.issuer.issuer, "sub": "auth0|alice", "aud": demo.SUPPORT_AUDIENCE,
        "iat": int(NOW) - 10, "exp": int(NOW) + 600, "jti": "j-1", "scope": "openid",
        PII: stack.users["alice"].token_id,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def header(key: KeyPair, **changes: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
    h.update(changes)
    return {k: v for k, v in h.items() if v is not DROP}


def signed(key: KeyPair, head: dict[str, Any], body: dict[str, Any] | str) -> str:
    payload = body if isinstance(body, str) else json.dumps(body)
    return raw_token(json.dumps(head), payload, key, alg=head.get("alg") if
                     head.get("alg") in ("RS256", "ES256", "EdDSA") else key.alg)


def public_pem(key: KeyPair) -> bytes:
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_der(key: KeyPair) -> bytes:
    return key.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


Case = Callable[[Stack, KeyPair], str]


def _alg_none(spelling: str) -> Case:
    return lambda s, k: raw_token(json.dumps(header(k, alg=spelling)),
                                  json.dumps(claims(s)), None)


def _with_header(**changes: Any) -> Case:
    return lambda s, k: signed(k, header(k, **changes), claims(s))


def _swap_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


CASES: list[tuple[str, Case, str | None]] = [
    ("valid token (control)", lambda s, k: signed(k, header(k), claims(s)), None),
    *[(f"alg {a}", _alg_none(a), "TOKEN_ALGORITHM_NOT_ALLOWED")
      for a in ("none", "None", "NONE", "nOnE")],
    ("HS256 with the public key as PEM secret",
     lambda s, k: hmac_token(claims(s), public_pem(k), {"kid": k.kid}),
     "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("HS256 with the public key as DER secret",
     lambda s, k: hmac_token(claims(s), public_der(k), {"kid": k.kid}),
     "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("HS256 with the public JWK as secret",
     lambda s, k: hmac_token(claims(s), json.dumps(k.jwk()).encode(), {"kid": k.kid}),
     "TOKEN_ALGORITHM_NOT_ALLOWED"),
    ("foreign signature under the real kid",
     lambda s, k: signed(KeyPair(rsa_keypair("foreign").private_key, k.kid, "RS256"),
                         header(k), claims(s)),
     "TOKEN_SIGNATURE_INVALID"),
    ("signature of another token",
     lambda s, k: _swap_segment(signed(k, header(k), claims(s)), 2,
                                signed(k, header(k), claims(s, sub="x")).split(".")[2]),
     "TOKEN_SIGNATURE_INVALID"),
    ("stripped signature", lambda s, k: _swap_segment(signed(k, header(k), claims(s)), 2, ""),
     "TOKEN_SIGNATURE_INVALID"),
    *[(f"kid injection {kid!r}", _with_header(kid=kid), "TOKEN_KEY_UNKNOWN")
      for kid in ("../../etc/passwd", "' OR 1=1 --", "x" * 100)],
    ("kid too long", lambda s, k: signed(k, header(k, kid="k" * 200), claims(s)),
     "TOKEN_KEY_UNKNOWN"),
    *[(f"embedded {h} header", _with_header(**{h: v}), "TOKEN_HEADER_FORBIDDEN")
      for h, v in (("jwk", {"kty": "RSA"}), ("jku", "https://evil.example/k"),
                   ("x5u", "https://evil.example/c"), ("x5c", ["MIIB"]))],
    ("crit header", lambda s, k: signed(k, header(k, crit=["exp"]), claims(s)),
     "TOKEN_HEADER_FORBIDDEN"),
    ("b64 false", lambda s, k: signed(k, header(k, b64=False, crit=["b64"]), claims(s)),
     "TOKEN_HEADER_FORBIDDEN"),
    ("JWE (5 segments)", lambda s, k: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "TOKEN_MALFORMED"),
    ("duplicate payload key",
     lambda s, k: signed(k, header(k), json.dumps(claims(s))[:-1] + ', "sub": "auth0|bob"}'),
     "TOKEN_MALFORMED"),
    ("duplicate header key",
     lambda s, k: raw_token(json.dumps(header(k))[:-1] + ', "alg": "none"}',
                            json.dumps(claims(s)), k),
     "TOKEN_MALFORMED"),
    ("oversized token", lambda s, k: signed(k, header(k), claims(s, pad="x" * 9000)),
     "TOKEN_TOO_LARGE"),
    ("whitespace in token", lambda s, k: " " + signed(k, header(k), claims(s)),
     "TOKEN_MALFORMED"),
    ("base64 padding", lambda s, k: _swap_segment(
        signed(k, header(k), claims(s)), 0,
        base64.urlsafe_b64encode(json.dumps(header(k)).encode()).decode() + "=="),
     "TOKEN_MALFORMED"),
    ("standard (non-url) base64 alphabet", lambda s, k: _swap_segment(
        signed(k, header(k), claims(s)), 1,
        base64.b64encode(json.dumps(claims(s, x="??>>")).encode()).decode().rstrip("=")),
     "TOKEN_MALFORMED"),
    ("expired beyond leeway by 1 s",
     lambda s, k: signed(k, header(k), claims(s, exp=int(NOW) - LEEWAY - 1)), "TOKEN_EXPIRED"),
    ("expired within leeway",
     lambda s, k: signed(k, header(k), claims(s, exp=int(NOW) - LEEWAY + 1)), None),
    ("not yet valid beyond leeway by 1 s",
     lambda s, k: signed(k, header(k), claims(s, nbf=int(NOW) + LEEWAY + 1)),
     "TOKEN_NOT_YET_VALID"),
    ("not yet valid within leeway",
     lambda s, k: signed(k, header(k), claims(s, nbf=int(NOW) + LEEWAY - 1)), None),
    ("issued in the future beyond leeway",
     lambda s, k: signed(k, header(k), claims(s, iat=int(NOW) + LEEWAY + 1)),
     "TOKEN_ISSUED_IN_FUTURE"),
    ("issued in the future within leeway",
     lambda s, k: signed(k, header(k), claims(s, iat=int(NOW) + LEEWAY - 1)), None),
    ("missing audience", lambda s, k: signed(k, header(k), claims(s, aud=DROP)),
     "AUDIENCE_NOT_ACCEPTED"),
    ("empty audience", lambda s, k: signed(k, header(k), claims(s, aud=[])),
     "AUDIENCE_NOT_ACCEPTED"),
    ("other audience", lambda s, k: signed(k, header(k), claims(s, aud="https://other")),
     "AUDIENCE_NOT_ACCEPTED"),
    ("array audience including ours",
     lambda s, k: signed(k, header(k), claims(s, aud=["https://x/userinfo",
                                                     demo.SUPPORT_AUDIENCE])), None),
    ("issuer without its trailing slash",
     lambda s, k: signed(k, header(k), claims(s, iss=s.issuer.issuer.rstrip("/"))),
     "TOKEN_ISSUER_UNKNOWN"),
    ("issuer with a suffix", lambda s, k: signed(k, header(k), claims(s, iss=s.issuer.issuer
                                                                       + "evil")),
     "TOKEN_ISSUER_UNKNOWN"),
    ("issuer as a prefix of another host", lambda s, k: signed(
        k, header(k), claims(s, iss=s.issuer.issuer.rstrip("/") + ".evil.example/")),
     "TOKEN_ISSUER_UNKNOWN"),
    ("ID token (typ JWT) as access token", lambda s, k: signed(k, header(k, typ="JWT"),
                                                               claims(s)),
     "TOKEN_TYPE_INVALID"),
    ("no typ", lambda s, k: signed(k, header(k, typ=DROP), claims(s)), "TOKEN_TYPE_INVALID"),
    ("string exp", lambda s, k: signed(k, header(k), claims(s, exp=str(int(NOW) + 600))),
     "TOKEN_CLAIM_INVALID"),
    ("huge exp", lambda s, k: signed(k, header(k), json.dumps(claims(s)).replace(
        f'"exp": {int(NOW) + 600}', '"exp": 1e300')), "TOKEN_CLAIM_INVALID"),
    ("boolean exp", lambda s, k: signed(k, header(k), claims(s, exp=True)),
     "TOKEN_CLAIM_INVALID"),
    ("missing exp", lambda s, k: signed(k, header(k), claims(s, exp=DROP)),
     "TOKEN_CLAIM_MISSING"),
    ("missing sub", lambda s, k: signed(k, header(k), claims(s, sub=DROP)),
     "TOKEN_CLAIM_MISSING"),
    ("lifetime beyond the cap", lambda s, k: signed(k, header(k), claims(
        s, exp=int(NOW) + 2 * 86400)), "TOKEN_LIFETIME_EXCESSIVE"),
]


# One stack for the whole catalogue: the fixture and the cases share the module's loop.
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "make", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_attack_is_refused_with_its_reason(
    env: tuple[Stack, AsyncDetokenizationClient, KeyPair], name: str, make: Case,
    reason: str | None,
) -> None:
    stack, support, key = env
    token = make(stack, key)
    if reason is None:
        result = await support.detokenize(token)
        assert result["ssn"].value == "***-**-1234"
        return
    with pytest.raises(PiigateError) as caught:
        await support.detokenize(token)
    assert caught.value.reason == reason, name
    assert token not in str(caught.value)
    assert token not in caught.value.metadata.values()


def test_the_catalogue_covers_every_rule() -> None:
    reasons = {r for _, _, r in CASES if r}
    assert {"TOKEN_ALGORITHM_NOT_ALLOWED", "TOKEN_SIGNATURE_INVALID", "TOKEN_KEY_UNKNOWN",
            "TOKEN_HEADER_FORBIDDEN", "TOKEN_MALFORMED", "TOKEN_TOO_LARGE", "TOKEN_EXPIRED",
            "TOKEN_NOT_YET_VALID", "TOKEN_ISSUED_IN_FUTURE", "TOKEN_ISSUER_UNKNOWN",
            "TOKEN_TYPE_INVALID", "TOKEN_CLAIM_INVALID", "TOKEN_CLAIM_MISSING",
            "TOKEN_LIFETIME_EXCESSIVE", "AUDIENCE_NOT_ACCEPTED"} <= reasons
    assert len({name for name, _, _ in CASES}) == len(CASES)
