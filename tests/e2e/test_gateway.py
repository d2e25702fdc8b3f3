"""End to end: the real gRPC gateway, the real client library, the real local vault and
dev issuer on loopback. Each profile shape and each error reason, as a caller sees it."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from piigate_client import ClientCredentials, DetokenizationClient
from piigate_client.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PiigateError,
    Unauthenticated,
    Unavailable,
)
from piigate_dev import demo
from tests.support.stack import Stack, running_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with running_stack() as running:
        yield running


async def test_smart_on_fhir_profile_gets_the_raw_user_id(stack: Stack) -> None:
    fhir = await stack.caller("fhir-app")
    result = await fhir.detokenize(stack.users["alice"].access_token)
    assert result.profile == "smart_on_fhir"
    assert result.reason == "AppFunctionality"
    assert result.token_id == stack.users["alice"].token_id
    assert [(f.name, f.value, f.disclosure) for f in result.fields] == [
        ("user_id", "u-7f3a91", "raw")
    ]


async def test_support_profile_gets_masked_values_and_redactions(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    result = await support.detokenize(stack.user_token("alice"))
    assert [(f.name, f.value, f.disclosure) for f in result.fields] == [
        ("ssn", "***-**-1234", "masked"),
        ("email", "a***@example.com", "masked"),
        ("user_id", "", "redacted"),
    ]
    events = stack.audit_events()
    assert events[-1]["outcome"] == "allowed"
    assert events[-1]["fields"] == [
        {"name": "ssn", "disclosure": "masked"},
        {"name": "email", "disclosure": "masked"},
        {"name": "user_id", "disclosure": "redacted"},
    ]
    assert events[-1]["subject_sub"] == "auth0|alice"
    assert events[-1]["token_id"] == stack.users["alice"].token_id


async def test_a_subset_of_fields_and_an_allowed_reason(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    result = await support.detokenize(
        stack.user_token("bob"), fields=["email"], reason="AccountManagement"
    )
    assert [(f.name, f.value) for f in result.fields] == [("email", "b***@example.org")]


async def test_health_is_serving_and_reflection_lists_the_service(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "piigate.v1.DetokenizationService"):
            answer = await _serving(health, service)
            assert answer == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflection.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
            assert {"piigate.v1.DetokenizationService", "grpc.health.v1.Health"} <= names
            break


async def _serving(health: health_pb2_grpc.HealthStub, service: str) -> int:
    for _ in range(50):  # bounded: keys are fetched right after start
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            break
        await asyncio.sleep(0.05)
    return int(answer.status)


# --- every error reason, through the wire -----------------------------------------------
async def expect(call: object, error: type[PiigateError], reason: str) -> PiigateError:
    with pytest.raises(error) as caught:
        await call  # type: ignore[misc]
    assert caught.value.reason == reason
    return caught.value


async def test_caller_without_profile_is_denied_and_audited(stack: Stack) -> None:
    billing = await stack.caller("billing-app")
    await expect(billing.detokenize(stack.user_token("alice")), PermissionDenied,
                 "CALLER_WITHOUT_PROFILE")
    event = stack.audit_events()[-1]
    assert (event["outcome"], event["caller"], event["error_reason"]) == (
        "denied", "billing-app", "CALLER_WITHOUT_PROFILE")


async def test_token_for_another_audience_is_denied(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    await expect(support.detokenize(stack.users["alice"].access_token), PermissionDenied,
                 "AUDIENCE_NOT_ACCEPTED")


async def test_missing_scope_is_denied(stack: Stack) -> None:
    fhir = await stack.caller("fhir-app")
    token = stack.user_token("alice", audience=demo.FHIR_AUDIENCE, scope="openid")
    error = await expect(fhir.detokenize(token), PermissionDenied, "SCOPE_MISSING")
    assert error.metadata["missing"] == "patient/Patient.read"


async def test_expired_subject_token(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    token = stack.user_token("alice", lifetime_s=600, iat_offset_s=-3600)
    error = await expect(support.detokenize(token), Unauthenticated, "TOKEN_EXPIRED")
    assert error.metadata["token_role"] == "subject"


async def test_field_and_reason_beyond_the_profile(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    token = stack.user_token("alice")
    await expect(support.detokenize(token, fields=["diagnosis"]), PermissionDenied,
                 "FIELD_NOT_ALLOWED")
    await expect(support.detokenize(token, reason="Marketing"), PermissionDenied,
                 "REASON_NOT_ALLOWED")
    await expect(support.detokenize(token, fields=["ssn.mask"]), InvalidArgument,
                 "FIELD_NAME_INVALID")
    await expect(support.detokenize(token, adhoc_reason="because"), InvalidArgument,
                 "REASON_INVALID")
    await expect(support.detokenize(""), InvalidArgument, "SUBJECT_TOKEN_MISSING")


async def test_caller_credential_problems(stack: Stack) -> None:
    token = stack.user_token("alice")
    await expect(stack.client("").detokenize(token), Unauthenticated,
                 "CALLER_CREDENTIAL_MISSING")
    await expect(stack.client("not-a-jwt").detokenize(token), Unauthenticated, "TOKEN_MALFORMED")
    # A valid user token is not a caller credential: it is not issued for piigate.
    error = await expect(stack.client(token).detokenize(token), Unauthenticated,
                         "TOKEN_AUDIENCE_INVALID")
    assert error.metadata["token_role"] == "caller"
    other_audience = await stack.caller_token("support-tool", audience="piigate")
    assert other_audience  # the properly scoped credential works (sanity of the setup)


async def test_subject_token_from_an_unknown_issuer(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    forged = _forge_unsigned({"iss": "https://evil.example/", "sub": "x"})
    await expect(support.detokenize(forged), Unauthenticated, "TOKEN_ISSUER_UNKNOWN")


async def test_tampered_subject_token_fails_its_signature(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    header, payload, signature = stack.user_token("alice").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["https://example.com/pii_token"] = stack.users["bob"].token_id
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    await expect(support.detokenize(f"{header}.{forged_payload}.{signature}"), Unauthenticated,
                 "TOKEN_SIGNATURE_INVALID")


async def test_token_without_a_vault_claim(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    token = stack.issuer.signer.sign_user_token(
        demo_request(sub="auth0|nobody", audience=demo.SUPPORT_AUDIENCE)
    )
    await expect(support.detokenize(token), FailedPrecondition, "PII_TOKEN_CLAIM_MISSING")


async def test_unknown_vault_token_is_not_found(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    token = stack.issuer.signer.sign_user_token(
        demo_request(sub="auth0|ghost", pii_token="no-such-token", audience=demo.SUPPORT_AUDIENCE)
    )
    await expect(support.detokenize(token), NotFound, "VAULT_TOKEN_NOT_FOUND")


async def test_vault_policy_refusing_the_profiles_key(stack: Stack) -> None:
    # The support key may read ssn.mask only; a profile asking for raw ssn is refused by
    # the vault itself, whatever piigate's config says.
    async with running_stack(gateway_overrides={"profiles": {"support": {
        "fields": {"ssn": "raw"}}}}) as misconfigured:
        support = await misconfigured.caller("support-tool")
        await expect(support.detokenize(misconfigured.user_token("alice")), PermissionDenied,
                     "VAULT_ACCESS_DENIED")


async def test_vault_down_is_unavailable_and_returns_nothing() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with running_stack(vault_url=dead) as broken:
        support = await broken.caller("support-tool")
        await expect(support.detokenize(broken.user_token("alice")), Unavailable,
                     "VAULT_UNAVAILABLE")
        assert broken.audit_events()[-1]["outcome"] == "failed"


async def test_oversized_metadata_is_refused_and_the_server_keeps_serving(stack: Stack) -> None:
    oversized = stack.client("x" * 20_000)  # beyond server.max_metadata_bytes (8 KiB)
    with pytest.raises(PiigateError) as caught:
        await oversized.detokenize(stack.user_token("alice"))
    assert caught.value.code != grpc.StatusCode.OK
    fhir = await stack.caller("fhir-app")
    assert (await fhir.detokenize(stack.users["carol"].access_token))["user_id"].value


async def test_audit_failure_withholds_the_data(stack: Stack) -> None:
    support = await stack.caller("support-tool")
    stack.audit_stream.close()  # the sink can no longer write
    await expect(support.detokenize(stack.user_token("alice")), Unavailable, "AUDIT_UNAVAILABLE")


async def test_blocking_client_with_refreshing_client_credentials(stack: Stack) -> None:
    """The blocking client and the OAuth credential helper, run in a thread (the servers
    share this test's event loop)."""
    credential = ClientCredentials(
        stack.issuer.base_url + "/oauth/token", "fhir-app", stack.secrets.clients["fhir-app"],
        audience="piigate",
    )

    def call() -> list[tuple[str, str, str]]:
        with DetokenizationClient(stack.target, credential, timeout_s=5) as client:
            result = client.detokenize(stack.users["bob"].access_token)
            with pytest.raises(PermissionDenied) as caught:
                client.detokenize(stack.user_token("bob"))
            assert caught.value.reason == "AUDIENCE_NOT_ACCEPTED"
        return [(f.name, f.value, f.disclosure) for f in result.fields]

    assert await asyncio.to_thread(call) == [("user_id", "u-22c0d4", "raw")]


def demo_request(**fields: object) -> object:
    from piigate_dev.devissuer.claims import UserTokenRequest

    return UserTokenRequest(scope="openid", **fields)  # type: ignore[arg-type]


def _forge_unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'at+jwt'})}.{part(claims)}.c2lnbmF0dXJl"
