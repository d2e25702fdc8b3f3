"""Caller identity by client certificate, through the real gateway with mutual TLS and a
throwaway CA made at test time."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PermissionDenied, PiigateError, Unavailable
from tests.support.pki import (
    CertificateAuthority,
    channel_credentials,
    issue_cert,
    make_ca,
    server_cert,
)
from tests.support.rsa_client import rsa_client_credentials
from tests.support.stack import Stack, running_stack

SUPPORT_ID = "spiffe://example.org/ns/tools/sa/support-tool"
EXPORTER_ID = "spiffe://example.org/ns/batch/sa/exporter"


@pytest.fixture
async def mtls(tmp_path: Path) -> AsyncIterator[tuple[Stack, CertificateAuthority]]:
    ca = make_ca("example-org", tmp_path)
    server = server_cert(ca)
    overrides = {
        "server": {"tls_cert_file": str(server.cert_file), "tls_key_file": str(server.key_file),
                   "tls_client_ca_file": str(ca.cert_file)},
        "profiles": {
            # A bearer client id AND its workload certificate.
            "support": {"peers": [SUPPORT_ID]},
            # A workload known by its certificate alone.
            "exporter": {"peers": [EXPORTER_ID], "audiences": ["https://support.example.com"],
                         "collection": "users",
                         "vault_api_key_env": "PIIGATE_DEMO_VAULT_KEY_SUPPORT",
                         "reasons": ["AccountManagement"], "fields": {"ssn": "mask"}},
        },
    }
    async with running_stack(gateway_overrides=overrides) as stack:
        yield stack, ca


def client(stack: Stack, ca: CertificateAuthority, uri_sans: tuple[str, ...],
           bearer: str = "", **cert: dt.datetime) -> AsyncDetokenizationClient:
    leaf = issue_cert(ca, uri_sans=uri_sans, **cert) if uri_sans else None
    c = AsyncDetokenizationClient(stack.target, (lambda: bearer) if bearer else None,
                                  timeout_s=5, channel_credentials=channel_credentials(ca, leaf))
    stack._clients.append(c)
    return c


async def test_bearer_and_certificate_both_match(mtls: tuple[Stack, CertificateAuthority]) -> None:
    stack, ca = mtls
    bearer = await stack.caller_token("support-tool")
    result = await client(stack, ca, (SUPPORT_ID,), bearer).detokenize(stack.user_token("alice"))
    assert result["ssn"].value == "***-**-1234"
    assert stack.audit_events()[-1]["caller_peer"] == SUPPORT_ID


async def test_prefix_sharing_identity_is_not_the_profiles_peer(
    mtls: tuple[Stack, CertificateAuthority],
) -> None:
    stack, ca = mtls
    bearer = await stack.caller_token("support-tool")
    evil = client(stack, ca, (SUPPORT_ID + "-evil",), bearer)
    with pytest.raises(PermissionDenied) as caught:
        await evil.detokenize(stack.user_token("alice"))
    assert caught.value.reason == "CALLER_PEER_NOT_ALLOWED"


async def test_two_uri_sans_carry_no_spiffe_id(mtls: tuple[Stack, CertificateAuthority]) -> None:
    stack, ca = mtls
    bearer = await stack.caller_token("support-tool")
    two = client(stack, ca, (SUPPORT_ID, "spiffe://example.org/other"), bearer)
    with pytest.raises(PermissionDenied) as caught:
        await two.detokenize(stack.user_token("alice"))
    assert caught.value.reason == "CALLER_PEER_NOT_ALLOWED"


async def test_certificate_only_caller(mtls: tuple[Stack, CertificateAuthority]) -> None:
    stack, ca = mtls
    exporter = client(stack, ca, (EXPORTER_ID,))
    result = await exporter.detokenize(stack.user_token("bob"))
    assert (result.profile, result["ssn"].value) == ("exporter", "***-**-4321")
    stranger = client(stack, ca, ("spiffe://example.org/ns/x/sa/unknown",))
    with pytest.raises(PermissionDenied) as caught:
        await stranger.detokenize(stack.user_token("bob"))
    assert caught.value.reason == "CALLER_WITHOUT_PROFILE"


@pytest.mark.parametrize(("bits", "reason"), [(1024, None), (2048, "ok")])
async def test_weak_rsa_client_key_is_no_identity(
    mtls: tuple[Stack, CertificateAuthority], bits: int, reason: str | None
) -> None:
    # Client keys are held to the token-key minimum (RSA >= 2048): grpc completes the
    # handshake, the gateway refuses the identity, so no profile's peer matches.
    stack, ca = mtls
    bearer = await stack.caller_token("support-tool")
    supports = [
        AsyncDetokenizationClient(
            stack.target, (lambda: bearer) if bearer_first else None, timeout_s=5,
            channel_credentials=rsa_client_credentials(ca, bits, uri_sans=(peer,)),
        )
        for bearer_first, peer in ((True, SUPPORT_ID), (False, EXPORTER_ID))
    ]
    stack._clients.extend(supports)
    if reason == "ok":
        assert (await supports[0].detokenize(stack.user_token("alice")))["ssn"].value
        assert (await supports[1].detokenize(stack.user_token("bob"))).profile == "exporter"
        return
    with pytest.raises(PermissionDenied) as caught:
        await supports[0].detokenize(stack.user_token("alice"))
    assert caught.value.reason == "CALLER_PEER_NOT_ALLOWED"
    with pytest.raises(PermissionDenied) as caught:
        await supports[1].detokenize(stack.user_token("bob"))
    assert caught.value.reason == "CALLER_WITHOUT_PROFILE"


@pytest.mark.parametrize("problem", ["other CA", "expired", "no certificate"])
async def test_handshake_refuses_bad_client_certificates(
    mtls: tuple[Stack, CertificateAuthority], tmp_path: Path, problem: str
) -> None:
    stack, ca = mtls
    bearer = await stack.caller_token("support-tool")
    if problem == "other CA":
        other = make_ca("other-org", tmp_path / "other")
        leaf = issue_cert(other, uri_sans=(SUPPORT_ID,))
        credentials = channel_credentials(ca, leaf)
    elif problem == "expired":
        now = dt.datetime.now(dt.UTC)
        leaf = issue_cert(ca, uri_sans=(SUPPORT_ID,), not_before=now - dt.timedelta(days=2),
                          not_after=now - dt.timedelta(days=1))
        credentials = channel_credentials(ca, leaf)
    else:
        credentials = channel_credentials(ca, None)
    c = AsyncDetokenizationClient(stack.target, lambda: bearer, timeout_s=5,
                                  channel_credentials=credentials)
    stack._clients.append(c)
    with pytest.raises(PiigateError) as caught:
        await c.detokenize(stack.user_token("alice"))
    assert isinstance(caught.value, Unavailable)
