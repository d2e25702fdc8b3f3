"""Opaque tokens, pure and with a fake endpoint: the answer rules (A1-A5), the cache's
bounds (the answer's exp and the configured bound) and its keys (a hash, never the
token), single flight, routing, the verifier's dispatch and the config keys."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
import yarl

from piigate.config import ConfigError, parse_config
from piigate.errors import (
    IssuerKeysUnavailable,
    TokenAudienceInvalid,
    TokenClaimInvalid,
    TokenClaimMissing,
    TokenExpired,
    TokenInactive,
    TokenIssuerUnknown,
    TokenLifetimeExcessive,
    TokenMalformed,
    TokenNotYetValid,
    TokenRejected,
    TokenTooLarge,
    TokenTypeInvalid,
)
from piigate.tokens.discovery import DiscoveryFailed
from piigate.tokens.introspection import (
    Answer,
    IntrospectionFailed,
    IntrospectionSettings,
    Introspector,
    OpaqueRoutes,
    cached_until,
    judge,
    parse_answer,
    token_digest,
)
from piigate.tokens.jws import freeze
from piigate.tokens.keys import KeySet, parse_jwks
from piigate.tokens.verification import IssuerPolicy, TypRule
from piigate.tokens.verifier import TokenVerifier
from piigate_client.client_auth import JWT_BEARER, ClientSecretBasic, PrivateKeyJwt
from tests.support.clientkeys import client_key
from tests.support.jwt_factory import jwks_bytes, make_token, rsa_keypair

NOW = 1_700_000_000.0
ISS = "https://ehr.example.com/"
ENDPOINT = "https://ehr.example.com/introspect"
TOKEN = "ehr_0123456789abcdefABCDEF-_.~+/"
POLICY = IssuerPolicy(name="ehr", issuer=ISS, algorithms=("RS256",), typ_rule=TypRule.ANY,
                      max_lifetime_s=86_400)


def active(**changes: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "active": True, "sub": "patient-1", "aud": "https://fhir.example.com",
        "scope": "patient/Patient.rs launch/patient", "client_id": "fhir-app",
        "token_type": "Bearer", "iat": int(NOW) - 60, "exp": int(NOW) + 600, "jti": "j-1",
        "https://example.com/pii_token": "tok-1", "patient": "p-1",
    }
    answer.update(changes)
    return {k: v for k, v in answer.items() if v is not None}


def answer_of(document: Mapping[str, Any]) -> Answer:
    return parse_answer(json.dumps(document).encode())


def refusal(document: Mapping[str, Any], now: float = NOW,
            policy: IssuerPolicy = POLICY) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        judge(answer_of(document), policy, now)
    return caught.value


# --- A1: the answer's shape is the endpoint's business --------------------------------
@pytest.mark.parametrize(("body", "detail"), [
    (b"<html>down</html>", "not_json"),
    (b"\xff\xfe", "not_json"),
    (b'{"active": true, "active": false}', "not_json"),  # duplicate member
    (b"[" * 5000 + b"]" * 5000, "not_json"),
    (b"NaN", "not_json"),
    (b'["active"]', "not_an_object"),
    (b"{}", "no_active_boolean"),
    (b'{"active": "true"}', "no_active_boolean"),
    (b'{"active": 1}', "no_active_boolean"),
])
def test_an_answer_that_is_not_rfc7662_is_an_endpoint_fault(body: bytes, detail: str) -> None:
    with pytest.raises(IntrospectionFailed) as caught:
        parse_answer(body)
    assert caught.value.detail == detail


# --- A2-A5: the token's business, as for a JWT ----------------------------------------
def test_an_active_answer_verifies_like_a_jwt() -> None:
    verified = judge(answer_of(active(iss=None)), POLICY, NOW)
    assert verified.issuer_name == "ehr"
    assert verified.issuer == ISS  # filled in: the endpoint speaks for its issuer alone
    assert verified.subject == "patient-1"
    assert verified.jti == "j-1"
    assert verified.audiences == ("https://fhir.example.com",)
    assert verified.expires_at == NOW + 600
    assert dict(verified.header) == {}
    assert "active" not in verified.claims
    assert verified.claims["patient"] == "p-1"
    with pytest.raises(TypeError):  # read-only, like a JWT's (shared through the cache)
        verified.claims["sub"] = "x"  # type: ignore[index]


def test_an_inactive_answer_is_token_inactive_naming_the_issuer() -> None:
    error = refusal({"active": False})
    assert isinstance(error, TokenInactive)
    assert error.reason == "TOKEN_INACTIVE"
    assert dict(error.metadata) == {"issuer": "ehr"}


@pytest.mark.parametrize(("changes", "error", "claim"), [
    ({"iss": "https://other.example.com/"}, TokenIssuerUnknown, None),
    ({"iss": ISS.rstrip("/")}, TokenIssuerUnknown, None),  # exact, as for a JWT
    ({"token_type": "refresh_token"}, TokenTypeInvalid, None),
    ({"token_type": "N_A"}, TokenTypeInvalid, None),
    ({"token_type": 1}, TokenTypeInvalid, None),
    ({"typ": "ID"}, TokenTypeInvalid, None),  # an ID token is never an access token
    ({"token_use": "id"}, TokenTypeInvalid, None),
    ({"client_id": ""}, TokenClaimInvalid, "client_id"),
    ({"client_id": 7}, TokenClaimInvalid, "client_id"),
    ({"username": ["a"]}, TokenClaimInvalid, "username"),
    ({"scope": ["patient/Patient.rs"]}, TokenClaimInvalid, "scope"),
    ({"sub": None}, TokenClaimMissing, "sub"),
    ({"exp": None}, TokenClaimMissing, "exp"),  # no expiry: never accepted, never cached
    ({"iat": None}, TokenClaimMissing, "iat"),
    ({"sub": ""}, TokenClaimInvalid, "sub"),
    ({"exp": True}, TokenClaimInvalid, "exp"),
    ({"exp": 10**400}, TokenClaimInvalid, "exp"),
    ({"aud": 5}, TokenClaimInvalid, "aud"),
    ({"exp": int(NOW) - 31}, TokenExpired, None),
    ({"nbf": int(NOW) + 31}, TokenNotYetValid, None),
    ({"iat": int(NOW) - 90_000, "exp": int(NOW) + 600}, TokenLifetimeExcessive, None),
])
def test_each_claim_rule_refuses_with_its_own_reason(
    changes: dict[str, Any], error: type[TokenRejected], claim: str | None
) -> None:
    refused = refusal(active(**changes))
    assert type(refused) is error
    assert refused.metadata.get("issuer") == "ehr"
    assert refused.metadata.get("claim") == claim


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER",
                                        "urn:ietf:params:oauth:token-type:access_token", None])
def test_access_token_types_are_accepted(token_type: str | None) -> None:
    assert judge(answer_of(active(token_type=token_type)), POLICY, NOW).subject == "patient-1"


def test_leeway_applies_as_for_a_jwt() -> None:
    assert judge(answer_of(active(exp=int(NOW) - 29)), POLICY, NOW).subject == "patient-1"


def test_the_issuer_typ_rule_reads_the_answer() -> None:
    keycloak = IssuerPolicy(name="kc", issuer=ISS, algorithms=("RS256",),
                            typ_rule=TypRule.KEYCLOAK)
    assert judge(answer_of(active(typ="Bearer")), keycloak, NOW).subject == "patient-1"
    assert isinstance(refusal(active(), policy=keycloak), TokenTypeInvalid)


def test_audience_is_checked_when_the_policy_names_one() -> None:
    strict = IssuerPolicy(name="ehr", issuer=ISS, algorithms=("RS256",),
                          typ_rule=TypRule.ANY, audiences=("https://other.example.com",))
    assert isinstance(refusal(active(), policy=strict), TokenAudienceInvalid)


# --- the cache's bound -----------------------------------------------------------------
def test_an_active_answer_is_cached_until_the_earlier_of_exp_and_the_bound() -> None:
    assert cached_until(answer_of(active(exp=int(NOW) + 10)), NOW, 60) == NOW + 10
    assert cached_until(answer_of(active(exp=int(NOW) + 600)), NOW, 60) == NOW + 60


@pytest.mark.parametrize("document", [
    {"active": False}, active(exp="soon"), active(exp=True), active(exp=10**400),
    active(exp=None),
])
def test_other_answers_are_cached_for_the_bound(document: dict[str, Any]) -> None:
    assert cached_until(answer_of(document), NOW, 60) == NOW + 60


# --- the introspector, with a fake endpoint --------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A fake POST: answers `answers[token]` (or inactive), records every call."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[yarl.URL, dict[str, str], dict[str, str]]] = []
        self.failure: IntrospectionFailed | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: yarl.URL, headers: Mapping[str, str],
                       form: Mapping[str, str], timeout_s: float, max_bytes: int) -> bytes:
        self.calls.append((url, dict(headers), dict(form)))
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return json.dumps(self.answers.get(form["token"], {"active": False})).encode()


def introspector(endpoint: Endpoint, clock: Clock, **settings: Any) -> Introspector:
    fields: dict[str, Any] = {"client_id": "piigate",
                              "authentication": ClientSecretBasic("s3cret"),
                              "endpoint": ENDPOINT, **settings}
    return Introspector(POLICY, IntrospectionSettings(**fields), endpoint, clock)


async def test_the_call_carries_the_token_and_piigates_basic_credentials() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    verified = await introspector(endpoint, clock).verify(TOKEN)
    assert verified.subject == "patient-1"
    ((url, headers, form),) = endpoint.calls
    assert str(url) == ENDPOINT
    assert form == {"token": TOKEN, "token_type_hint": "access_token"}
    assert headers["Authorization"] == "Basic cGlpZ2F0ZTpzM2NyZXQ="  # piigate:s3cret
    assert headers["Accept"] == "application/json"


@pytest.mark.parametrize("audience", [None, "https://ehr.example.com/token"])
async def test_private_key_jwt_sends_a_fresh_assertion_for_the_endpoint(
    audience: str | None,
) -> None:
    endpoint, clock = Endpoint(), Clock()
    key = client_key("ES256", "piigate-1")
    signer = PrivateKeyJwt(key.private_pem, algorithm="ES256", key_id="piigate-1", clock=clock)
    check = introspector(endpoint, clock, authentication=signer, assertion_audience=audience)
    for token in (TOKEN, TOKEN + "x"):
        with pytest.raises(TokenInactive):  # unknown to the fake: its answer is inactive
            await check.verify(token)
    first, second = (form for _, _, form in endpoint.calls)
    assert first["client_assertion_type"] == JWT_BEARER
    claims = jwt.decode(first["client_assertion"], options={"verify_signature": False})
    assert claims["iss"] == claims["sub"] == "piigate"
    assert claims["aud"] == (audience or ENDPOINT)
    assert jwt.get_unverified_header(first["client_assertion"])["kid"] == "piigate-1"
    assert first["client_assertion"] != second["client_assertion"]  # one use each


async def test_answers_are_cached_under_the_tokens_hash_never_the_token() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    check = introspector(endpoint, clock)
    first = await check.verify(TOKEN)
    again = await check.verify(TOKEN)
    assert len(endpoint.calls) == 1
    assert again.claims == first.claims
    keys = list(check._answers.keys())
    assert keys == [hashlib.sha256(TOKEN.encode()).digest()] == [token_digest(TOKEN)]
    assert all(TOKEN not in repr(entry) for entry in check._answers.values())


async def test_the_configured_bound_ends_a_cached_answer() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    check = introspector(endpoint, clock, cache_s=5)
    await check.verify(TOKEN)
    del endpoint.answers[TOKEN]  # revoked at the issuer
    clock.now += 4.9
    assert (await check.verify(TOKEN)).subject == "patient-1"  # still within the bound
    clock.now += 0.2
    with pytest.raises(TokenInactive):
        await check.verify(TOKEN)
    assert len(endpoint.calls) == 2


async def test_the_answers_exp_ends_a_cached_answer_before_the_bound() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active(exp=int(NOW) + 10)
    check = introspector(endpoint, clock, cache_s=60)
    await check.verify(TOKEN)
    clock.now += 9
    await check.verify(TOKEN)
    assert len(endpoint.calls) == 1
    clock.now += 2  # past exp, within the bound
    await check.verify(TOKEN)  # within leeway: still accepted, but asked again
    assert len(endpoint.calls) == 2


async def test_a_cache_hit_still_runs_the_time_rules() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active(nbf=int(NOW) + 45)  # not yet valid
    check = introspector(endpoint, clock)
    with pytest.raises(TokenNotYetValid):
        await check.verify(TOKEN)
    clock.now += 20  # nbf within the leeway now; the cached answer is judged anew
    assert (await check.verify(TOKEN)).subject == "patient-1"
    assert len(endpoint.calls) == 1


async def test_inactive_answers_are_cached_for_the_bound_too() -> None:
    endpoint, clock = Endpoint(), Clock()
    check = introspector(endpoint, clock, cache_s=30)
    for _ in range(3):
        with pytest.raises(TokenInactive):
            await check.verify(TOKEN)
    assert len(endpoint.calls) == 1


async def test_a_zero_bound_caches_nothing() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    check = introspector(endpoint, clock, cache_s=0)
    await check.verify(TOKEN)
    await check.verify(TOKEN)
    assert len(endpoint.calls) == 2
    assert len(check) == 0


async def test_the_cache_is_bounded() -> None:
    endpoint, clock = Endpoint(), Clock()
    check = introspector(endpoint, clock, cache_size=3)
    for n in range(10):
        with pytest.raises(TokenInactive):
            await check.verify(f"{TOKEN}{n}")
    assert len(check) == 3


async def test_concurrent_verifications_of_one_token_share_one_call() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    endpoint.gate = asyncio.Event()
    check = introspector(endpoint, clock)
    waiters = [asyncio.ensure_future(check.verify(TOKEN)) for _ in range(20)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller leaves (its deadline): the others' call goes on
    await asyncio.sleep(0)
    endpoint.gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert {r.subject for r in results} == {"patient-1"}
    assert len(endpoint.calls) == 1
    assert check._inflight == {}


async def test_an_endpoint_fault_fails_closed_and_is_not_cached() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    endpoint.failure = IntrospectionFailed("http_status_500")
    check = introspector(endpoint, clock)
    with pytest.raises(IssuerKeysUnavailable) as caught:
        await check.verify(TOKEN)
    assert dict(caught.value.metadata) == {"issuer": "ehr", "detail": "introspection"}
    assert check.status().last_error == "http_status_500"
    assert check.status().ready  # the endpoint is known; the fault is per call
    endpoint.failure = None
    assert (await check.verify(TOKEN)).subject == "patient-1"
    assert len(endpoint.calls) == 2
    assert check.status().last_error is None


@pytest.mark.parametrize(("token", "error"), [
    ("has space", TokenMalformed), ("ünïcode", TokenMalformed), ("", TokenMalformed),
    ("a=b", TokenMalformed), ("==", TokenMalformed), ("x" * 8193, TokenTooLarge),
    ("tok\n", TokenMalformed),
])
async def test_a_token_that_is_no_bearer_token_is_never_sent(
    token: str, error: type[TokenRejected]
) -> None:
    endpoint, clock = Endpoint(), Clock()
    with pytest.raises(error) as caught:
        await introspector(endpoint, clock).verify(token)
    assert caught.value.metadata["issuer"] == "ehr"
    assert endpoint.calls == []


async def test_a_discovered_endpoint_is_found_once_and_a_failure_backs_off() -> None:
    endpoint, clock = Endpoint(), Clock()
    found: list[int] = []
    failing = [True]

    async def discover() -> str:
        found.append(1)
        if failing[0]:
            raise DiscoveryFailed("http_status_503")
        return ENDPOINT

    settings = IntrospectionSettings(client_id="piigate",
                                     authentication=ClientSecretBasic("s"))
    check = Introspector(POLICY, settings, endpoint, clock, discover=discover)
    assert not check.status().ready
    with pytest.raises(IssuerKeysUnavailable):
        await check.prime()
    with pytest.raises(IssuerKeysUnavailable):
        await check.verify(TOKEN)  # backing off: not asked again
    assert len(found) == 1
    assert check.status().last_error == "discovery_backing_off"
    failing[0] = False
    clock.now += 5
    await check.prime()
    assert check.status().ready
    with pytest.raises(TokenInactive):
        await check.verify(TOKEN)
    assert len(found) == 2
    assert str(endpoint.calls[0][0]) == ENDPOINT


# --- routing and the verifier's dispatch ----------------------------------------------
def test_routes_by_longest_prefix_then_the_unprefixed_issuer() -> None:
    endpoint, clock = Endpoint(), Clock()
    short, long_, bare = (introspector(endpoint, clock, token_prefix=p)
                          for p in ("ehr_", "ehr_x_", None))
    routes = OpaqueRoutes([short, long_, bare], jwt_issuers=True)
    assert routes.route("ehr_abc") is short
    assert routes.route("ehr_x_abc") is long_
    assert routes.route("abc") is bare
    assert routes.route("a.b.c") is None  # JWT-shaped, and JWT issuers exist
    assert routes.route("ehr_a.b.c") is short  # the prefix decides first
    assert OpaqueRoutes([bare], jwt_issuers=False).route("a.b.c") is bare
    assert OpaqueRoutes([short], jwt_issuers=True).route("abc") is None
    with pytest.raises(ValueError, match="prefix"):
        OpaqueRoutes([bare, introspector(endpoint, clock)], jwt_issuers=True)


class Keys:
    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    async def key_for(self, kid: str | None) -> KeySet:
        return self.keys


async def test_the_verifier_introspects_only_when_asked_to_and_jwts_still_verify() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    key = rsa_keypair("k1")
    jwt_iss = "https://idp.example.com/"
    jwt_policy = IssuerPolicy(name="idp", issuer=jwt_iss, algorithms=("RS256",))
    keys = parse_jwks(jwks_bytes(key), ("RS256",))
    verifier = TokenVerifier({jwt_iss: (jwt_policy, Keys(keys))}, clock,
                             opaque=[introspector(endpoint, clock, token_prefix="ehr_")])
    with pytest.raises(TokenMalformed):  # a caller's credential: JWT only, nothing sent
        await verifier.verify(TOKEN)
    assert endpoint.calls == []
    assert (await verifier.verify(TOKEN, accept_opaque=True)).issuer_name == "ehr"
    signed = make_token({"iss": jwt_iss, "sub": "u", "iat": int(NOW), "exp": int(NOW) + 60},
                        key)
    assert (await verifier.verify(signed, accept_opaque=True)).issuer_name == "idp"
    assert (await verifier.verify(signed)).issuer_name == "idp"
    assert len(endpoint.calls) == 1


async def test_a_verifier_with_opaque_issuers_only() -> None:
    endpoint, clock = Endpoint(), Clock()
    endpoint.answers[TOKEN] = active()
    verifier = TokenVerifier({}, clock, opaque=[introspector(endpoint, clock)])
    assert (await verifier.verify(TOKEN, accept_opaque=True)).subject == "patient-1"
    with pytest.raises(TokenMalformed):
        await verifier.verify(TOKEN)


# --- config ---------------------------------------------------------------------------
ENV = {"FHIR_VAULT_KEY": "k", "INTROSPECT_SECRET": "s3cret"}


def config_with(*opaque: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "vault": {"url": "http://127.0.0.1:8123"},
        "caller": caller or {},
        "issuers": [
            {"name": "dev", "issuer": "http://127.0.0.1:9000/",
             "jwks_uri": "http://127.0.0.1:9000/.well-known/jwks.json"},
            *opaque,
        ],
        "profiles": {"fhir": {"callers": ["fhir-app"], "audiences": ["https://fhir"],
                              "collection": "users", "vault_api_key_env": "FHIR_VAULT_KEY",
                              "fields": {"ssn": "mask"}}},
    }


def ehr(**changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "ehr", "issuer": "https://ehr.example.com/", "token_format": "opaque",
        "introspection_endpoint": ENDPOINT, "introspection_client_id": "piigate",
        "introspection_client_secret_env": "INTROSPECT_SECRET",
    }
    table.update(changes)
    return {k: v for k, v in table.items() if v is not None}


def problems(data: dict[str, Any], base: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, ENV, base)
    return caught.value.problems


def test_an_opaque_issuer_is_read_with_safe_defaults() -> None:
    config = parse_config(config_with(ehr()), ENV, Path("."))
    issuer = config.issuers[1]
    assert issuer.token_format == "opaque"
    assert issuer.jwks_uri is None
    assert issuer.typ == "any"
    i = issuer.introspection
    assert i is not None
    assert (i.endpoint, i.client_id, i.auth_method) == (ENDPOINT, "piigate",
                                                        "client_secret_basic")
    assert (i.cache_s, i.timeout_s, i.token_prefix) == (60.0, 3.0, None)
    assert "s3cret" not in repr(issuer)
    assert config.caller.issuers == ("dev",)  # caller credentials stay JWTs
    assert config.issuers[0].token_format == "jwt"
    assert config.issuers[0].introspection is None


def test_a_private_key_issuer(tmp_path: Path) -> None:
    key = client_key("ES256", "piigate-1")
    (tmp_path / "piigate.pem").write_bytes(key.private_pem)
    (tmp_path / "piigate.pem").chmod(0o600)
    table = ehr(introspection_client_secret_env=None,
                introspection_private_key_file="piigate.pem", introspection_key_id="piigate-1",
                introspection_algorithm="ES256", introspection_cache_s=5,
                introspection_timeout_ms=500, opaque_token_prefix="ehr_",
                introspection_endpoint=None, discovery=True)
    i = parse_config(config_with(table), ENV, tmp_path).issuers[1].introspection
    assert i is not None
    assert (i.auth_method, i.key_id, i.algorithm, i.endpoint) == ("private_key_jwt",
                                                                  "piigate-1", "ES256", None)
    assert (i.cache_s, i.timeout_s, i.token_prefix) == (5.0, 0.5, "ehr_")
    assert "PRIVATE" not in repr(i)
    (tmp_path / "rsa.pem").write_bytes(client_key("RS256", "r").private_pem)
    (tmp_path / "rsa.pem").chmod(0o600)
    wrong = {**table, "introspection_private_key_file": "rsa.pem"}
    (found,) = problems(config_with(wrong), tmp_path)
    assert "does not fit the algorithm" in found
    (tmp_path / "junk.pem").write_text("not a key\n")
    (tmp_path / "junk.pem").chmod(0o600)
    junk = {**table, "introspection_private_key_file": "junk.pem"}
    (found,) = problems(config_with(junk), tmp_path)
    assert "is not a usable PEM private key" in found
    assert "not a key" not in found


@pytest.mark.parametrize(("table", "expected"), [
    (ehr(introspection_client_secret_env=None), "issuers[1].introspection_client_secret_file: "
     "give piigate's introspection credential"),
    (ehr(introspection_private_key_env="X"), "exactly one"),
    (ehr(introspection_endpoint=None), "issuers[1].introspection_endpoint: give "
     "introspection_endpoint or discovery = true"),
    (ehr(discovery=True), "exactly one"),
    (ehr(introspection_endpoint="http://ehr.example.com/introspect"), "must use https"),
    (ehr(jwks_uri="https://ehr.example.com/jwks"),
     'issuers[1].jwks_uri: applies only to token_format = "jwt"'),
    (ehr(algorithms=["RS256"]), 'issuers[1].algorithms: applies only to token_format = "jwt"'),
    (ehr(typ="at+jwt"), "issuers[1].typ: must be one of any, keycloak, cognito"),
    (ehr(token_format="reference"), "issuers[1].token_format: must be one of jwt, opaque"),
    (ehr(introspection_client_id=None), "issuers[1].introspection_client_id: is required"),
    (ehr(introspection_key_id="k"), "applies only to a private key"),
    (ehr(introspection_cache_s=7200), "must be from 0 to 3600 seconds"),
    (ehr(introspection_timeout_ms=0), "issuers[1].introspection_timeout_ms: must be greater"),
    (ehr(opaque_token_prefix="has space"), "issuers[1].opaque_token_prefix: must be 1 to 64"),
    (ehr(introspection_algorithm="HS256"), "issuers[1].introspection_algorithm: must be one"),
])
def test_opaque_issuer_mistakes_are_reported_with_their_key_path(
    table: dict[str, Any], expected: str
) -> None:
    assert any(expected in p for p in problems(config_with(table))), problems(config_with(table))


def test_introspection_keys_on_a_jwt_issuer_are_refused() -> None:
    data = config_with()
    data["issuers"][0]["introspection_cache_s"] = 5
    assert problems(data) == [
        'issuers[0].introspection_cache_s: applies only to token_format = "opaque"']


def test_each_opaque_token_has_one_issuer_to_go_to() -> None:
    two = config_with(ehr(), ehr(name="ehr2", issuer="https://ehr2.example.com/"))
    assert any("have no opaque_token_prefix" in p for p in problems(two))
    same = config_with(ehr(opaque_token_prefix="a_"),
                       ehr(name="ehr2", issuer="https://ehr2.example.com/",
                           opaque_token_prefix="a_"))
    assert problems(same) == ["issuers: opaque_token_prefix 'a_' is configured twice"]
    fine = config_with(ehr(), ehr(name="ehr2", issuer="https://ehr2.example.com/",
                                  opaque_token_prefix="a_"))
    assert len(parse_config(fine, ENV, Path(".")).issuers) == 3


def test_caller_credentials_cannot_come_from_an_opaque_issuer() -> None:
    data = config_with(ehr(), caller={"issuers": ["dev", "ehr"]})
    (found,) = problems(data)
    assert found.startswith("caller.issuers: 'ehr' has token_format = \"opaque\"")


def test_the_opaque_issuer_answer_keeps_no_header_and_no_active() -> None:
    answer = answer_of(active())
    assert answer.active is True
    assert answer.claims == freeze({k: v for k, v in active().items() if k != "active"})
