"""TLS to the vault, end to end: the real local vault served over TLS with a certificate
from a test CA, the real gateway configured with `[vault] ca_file` (and a client
certificate when the vault requires one), real calls through the real client."""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from tests.support.pki import CertificateAuthority, IssuedCert, issue_cert, make_ca, server_cert
from tests.support.stack import Stack, running_stack

NO_RETRIES = ("grpc.service_config", json.dumps({"methodConfig": []}))
MASKED = [("ssn", "***-**-1234"), ("email", "a***@example.com"), ("user_id", "")]


def vault_server_context(
    server: IssuedCert, client_ca: CertificateAuthority | None
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert_file, server.key_file)
    if client_ca is not None:  # mutual TLS: a client without a certificate is refused
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca.cert_file)
    return context


def migration_context(ca: CertificateAuthority, client: IssuedCert | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.cert_file)
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


async def read_alice(stack: Stack) -> list[tuple[str, str]]:
    token = await stack.caller_token("support-tool")
    async with AsyncDetokenizationClient(stack.target, lambda: token, timeout_s=10,
                                         options=[NO_RETRIES]) as support:
        result = await support.detokenize(stack.user_token("alice"))
    return [(f.name, f.value) for f in result.fields]


async def refused_reason(stack: Stack) -> str:
    with pytest.raises(PiigateError) as caught:
        await read_alice(stack)
    return caught.value.reason


def tls_stack(ca: CertificateAuthority, *, vault_keys: Mapping[str, str],
              client_ca: CertificateAuthority | None = None,
              migration_client: IssuedCert | None = None) -> Any:
    return running_stack(
        vault_ssl=vault_server_context(server_cert(ca), client_ca),
        migration_ssl=migration_context(ca, migration_client),
        gateway_overrides={"vault": dict(vault_keys)},
    )


async def test_the_vault_over_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    async with tls_stack(ca, vault_keys={"ca_file": str(ca.cert_file)}) as stack:
        assert stack.vault.base_url.startswith("https://127.0.0.1:")
        assert stack.config.vault.url.startswith("https://")
        assert await read_alice(stack) == MASKED


async def test_without_the_ca_file_the_vault_is_unavailable(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    async with tls_stack(ca, vault_keys={}) as stack:  # the system's roots: no test CA
        assert stack.config.vault.tls is None
        before = len(stack.audit_events())
        assert await refused_reason(stack) == "VAULT_UNAVAILABLE"
        assert [e["error_reason"] for e in stack.audit_events()[before:]] == [
            "VAULT_UNAVAILABLE"]


async def test_a_ca_that_did_not_sign_the_vault_is_refused(tmp_path: Path) -> None:
    ca, other = make_ca("vault", tmp_path), make_ca("other", tmp_path)
    async with tls_stack(ca, vault_keys={"ca_file": str(other.cert_file)}) as stack:
        assert await refused_reason(stack) == "VAULT_UNAVAILABLE"


async def test_mutual_tls_with_the_client_certificate(tmp_path: Path) -> None:
    ca, clients = make_ca("vault", tmp_path), make_ca("clients", tmp_path / "clients")
    piigate = issue_cert(clients, dns_sans=("piigate.internal",))
    keys = {"ca_file": str(ca.cert_file), "client_cert_file": str(piigate.cert_file),
            "client_key_file": str(piigate.key_file)}
    async with tls_stack(ca, vault_keys=keys, client_ca=clients,
                         migration_client=issue_cert(clients, cn="migration")) as stack:
        assert await read_alice(stack) == MASKED


async def test_mutual_tls_without_a_client_certificate_is_refused(tmp_path: Path) -> None:
    ca, clients = make_ca("vault", tmp_path), make_ca("clients", tmp_path / "clients")
    async with tls_stack(ca, vault_keys={"ca_file": str(ca.cert_file)}, client_ca=clients,
                         migration_client=issue_cert(clients, cn="migration")) as stack:
        assert await refused_reason(stack) == "VAULT_UNAVAILABLE"


async def test_a_client_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    ca, clients = make_ca("vault", tmp_path), make_ca("clients", tmp_path / "clients")
    stranger = issue_cert(make_ca("stranger", tmp_path / "stranger"), cn="piigate")
    keys = {"ca_file": str(ca.cert_file), "client_cert_file": str(stranger.cert_file),
            "client_key_file": str(stranger.key_file)}
    async with tls_stack(ca, vault_keys=keys, client_ca=clients,
                         migration_client=issue_cert(clients, cn="migration")) as stack:
        assert await refused_reason(stack) == "VAULT_UNAVAILABLE"
