"""Peer identity over real mTLS: a grpc.aio server on 127.0.0.1:0 with the reloading
credentials, and a raw-bytes echo method that answers with the identity it computed."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from piigate.identity.peer import matches, peer_identity
from piigate.transport.tls import ReloadingServerCredentials, TlsFiles, TlsMaterialInvalid
from tests.support.pki import (
    CertificateAuthority,
    IssuedCert,
    channel_credentials,
    issue_cert,
    make_ca,
    server_cert,
)
from tests.support.rsa_client import rsa_client_credentials

WHO = "/piigate.test.PeerEcho/Who"
TOOL = "spiffe://example.org/ns/a/sa/support-tool"
CALL_TIMEOUT_S = 5.0


async def _who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    auth_context = context.auth_context()
    identity = peer_identity(auth_context)
    return json.dumps(
        {
            "identity": None if identity is None else asdict(identity),
            "common_name": [v.decode() for v in auth_context.get("x509_common_name", ())],
        }
    ).encode()


_ECHO = grpc.method_handlers_generic_handler(
    "piigate.test.PeerEcho", {"Who": grpc.unary_unary_rpc_method_handler(_who)}
)


@asynccontextmanager
async def serving(credentials: grpc.ServerCredentials) -> AsyncIterator[int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_ECHO,))
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def who(port: int, credentials: grpc.ChannelCredentials) -> dict[str, Any]:
    """One call on a fresh connection (local subchannel pool: no sharing between tests)."""
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        answer = await channel.unary_unary(WHO)(b"", timeout=CALL_TIMEOUT_S)
    result: dict[str, Any] = json.loads(answer)
    return result


async def refused(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await who(port, credentials)
    return info.value.code()


async def served_serial(port: int, root: CertificateAuthority, client: IssuedCert) -> int:
    """The serial of the certificate the server presents to a new TLS connection."""

    def handshake() -> int:
        context = ssl.create_default_context(cafile=str(root.cert_file))
        context.load_cert_chain(client.cert_file, client.key_file)
        context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    return await asyncio.wait_for(asyncio.to_thread(handshake), CALL_TIMEOUT_S * 2)


@dataclass
class Pki:
    ca: CertificateAuthority  # example.org: signs the server and the trusted clients
    other: CertificateAuthority  # another trust domain, not in the server's bundle
    server: IssuedCert
    tls: TlsFiles  # the files the server reads (copies, so tests can replace them)


def install(path: Path, data: bytes) -> None:
    """Replace a file atomically, the way rotation tools do."""
    staging = path.with_name(path.name + ".new")
    staging.write_bytes(data)
    os.replace(staging, path)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = make_ca("example.org", tmp_path / "ca")
    other = make_ca("other.org", tmp_path / "other")
    server = server_cert(ca)
    live = tmp_path / "live"
    live.mkdir()
    tls = TlsFiles(live / "server.pem", live / "server.key", live / "clients.pem")
    install(tls.cert_file, server.cert_pem)
    install(tls.key_file, server.key_pem)
    assert tls.client_ca_file is not None
    install(tls.client_ca_file, ca.cert_pem)
    return Pki(ca, other, server, tls)


@pytest.fixture
async def port(pki: Pki) -> AsyncIterator[int]:
    async with serving(ReloadingServerCredentials(pki.tls).credentials) as p:
        yield p


# --- who is calling ---------------------------------------------------------------------
async def test_one_spiffe_uri_san_is_the_caller(pki: Pki, port: int) -> None:
    client = issue_cert(pki.ca, uri_sans=(TOOL,), cn="support-tool")
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["identity"] == {"spiffe_id": TOOL, "uri_sans": [TOOL], "dns_sans": []}


async def test_client_from_another_trust_domain_fails_the_handshake(pki: Pki, port: int) -> None:
    client = issue_cert(pki.other, uri_sans=("spiffe://other.org/ns/a/sa/support-tool",))
    assert await refused(port, channel_credentials(pki.ca, client)) == (grpc.StatusCode.UNAVAILABLE)


async def test_prefix_sharing_id_does_not_match(pki: Pki, port: int) -> None:
    evil = TOOL + "-evil"
    client = issue_cert(pki.ca, uri_sans=(evil,))
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["identity"]["spiffe_id"] == evil
    identity = peer_identity({"x509_pem_cert": [client.cert_pem]})
    assert identity is not None
    assert not matches(identity, TOOL)
    assert matches(identity, evil)


async def test_two_uri_sans_give_no_spiffe_id(pki: Pki, port: int) -> None:
    uris = [TOOL, "spiffe://example.org/ns/a/sa/other"]
    client = issue_cert(pki.ca, uri_sans=uris)
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["identity"] == {"spiffe_id": None, "uri_sans": uris, "dns_sans": []}


async def test_expired_client_certificate_fails_the_handshake(pki: Pki, port: int) -> None:
    now = dt.datetime.now(dt.UTC)
    client = issue_cert(
        pki.ca,
        uri_sans=(TOOL,),
        not_before=now - dt.timedelta(hours=2),
        not_after=now - dt.timedelta(hours=1),
    )
    assert await refused(port, channel_credentials(pki.ca, client)) == (grpc.StatusCode.UNAVAILABLE)


async def test_no_client_certificate_fails_the_handshake(pki: Pki, port: int) -> None:
    assert await refused(port, channel_credentials(pki.ca)) == grpc.StatusCode.UNAVAILABLE


async def test_dns_san_selector_is_exact_and_case_insensitive(pki: Pki, port: int) -> None:
    client = issue_cert(pki.ca, dns_sans=("Support-Tool.Internal",))
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["identity"] == {
        "spiffe_id": None,
        "uri_sans": [],
        "dns_sans": ["Support-Tool.Internal"],
    }
    identity = peer_identity({"x509_pem_cert": [client.cert_pem]})
    assert identity is not None
    assert matches(identity, "dns:support-tool.internal")
    assert matches(identity, "dns:SUPPORT-TOOL.internal")
    assert not matches(identity, "dns:tool.internal")
    assert not matches(identity, "dns:support-tool.internal.evil")


async def test_rsa_1024_client_certificate_is_no_identity(
    pki: Pki, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Token keys must be RSA >= 2048 (tokens/keys.py); a workload certificate is held to
    # the same. grpc completes the handshake, so the identity is refused where it is read.
    with caplog.at_level(logging.WARNING, logger="piigate.identity.peer"):
        answer = await who(port, rsa_client_credentials(pki.ca, 1024, uri_sans=(TOOL,)))
    assert answer["identity"] == {"spiffe_id": None, "uri_sans": [], "dns_sans": []}
    assert "RSA key of 1024 bits" in caplog.text
    assert TOOL not in caplog.text


async def test_rsa_2048_client_certificate_is_the_caller(pki: Pki, port: int) -> None:
    answer = await who(port, rsa_client_credentials(pki.ca, 2048, uri_sans=(TOOL,)))
    assert answer["identity"] == {"spiffe_id": TOOL, "uri_sans": [TOOL], "dns_sans": []}


async def test_cn_only_certificate_gives_no_usable_identity(pki: Pki, port: int) -> None:
    client = issue_cert(pki.ca, cn="support-tool")
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["common_name"] == ["support-tool"]  # grpc has it; we ignore it
    assert answer["identity"] == {"spiffe_id": None, "uri_sans": [], "dns_sans": []}


async def test_nul_in_a_san_is_not_truncated(pki: Pki, port: int) -> None:
    # grpc's own peer_dns property reports this SAN as "victim.internal".
    client = issue_cert(pki.ca, dns_sans=("victim.internal\x00.evil.example",))
    answer = await who(port, channel_credentials(pki.ca, client))
    assert answer["identity"]["dns_sans"] == ["victim.internal\x00.evil.example"]


async def test_without_client_auth_there_is_no_peer_identity(pki: Pki) -> None:
    credentials = ReloadingServerCredentials(pki.tls, require_client_auth=False).credentials
    client = issue_cert(pki.ca, uri_sans=(TOOL,))
    async with serving(credentials) as p:
        assert (await who(p, channel_credentials(pki.ca)))["identity"] is None
        # Even a client that offers a certificate is not asked for it.
        assert (await who(p, channel_credentials(pki.ca, client)))["identity"] is None


def test_client_auth_needs_a_client_ca(pki: Pki) -> None:
    without_bundle = TlsFiles(pki.tls.cert_file, pki.tls.key_file, None)
    with pytest.raises(TlsMaterialInvalid, match="client CA"):
        ReloadingServerCredentials(without_bundle)
    ReloadingServerCredentials(without_bundle, require_client_auth=False)


def test_invalid_material_at_start_up_is_fatal(pki: Pki) -> None:
    pki.tls.key_file.write_bytes(pki.server.key_pem[:50])
    with pytest.raises(TlsMaterialInvalid, match="key file"):
        ReloadingServerCredentials(pki.tls)


# --- reloading --------------------------------------------------------------------------
async def test_rotated_files_are_served_without_a_restart(pki: Pki, tmp_path: Path) -> None:
    reloading = ReloadingServerCredentials(pki.tls)
    old_client = issue_cert(pki.ca, uri_sans=(TOOL,))
    async with serving(reloading.credentials) as p:
        assert await served_serial(p, pki.ca, old_client) == pki.server.serial

        # A new root for servers and clients alike; the files are replaced atomically.
        rotated = make_ca("rotated.example.org", tmp_path / "rotated")
        new_server = server_cert(rotated)
        new_client = issue_cert(rotated, uri_sans=(TOOL,))
        assert pki.tls.client_ca_file is not None
        install(pki.tls.key_file, new_server.key_pem)
        install(pki.tls.cert_file, new_server.cert_pem)
        install(pki.tls.client_ca_file, rotated.cert_pem)

        assert await served_serial(p, rotated, new_client) == new_server.serial
        assert reloading.material.serial == new_server.serial
        answer = await who(p, channel_credentials(rotated, new_client))
        assert answer["identity"]["spiffe_id"] == TOOL
        # The old root no longer vouches for the server, nor the old bundle for clients.
        assert await refused(p, channel_credentials(pki.ca, old_client)) == (
            grpc.StatusCode.UNAVAILABLE
        )
        assert await refused(p, channel_credentials(rotated, old_client)) == (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_half_written_files_keep_the_old_material(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="piigate.transport.tls")
    reloading = ReloadingServerCredentials(pki.tls)
    client = issue_cert(pki.ca, uri_sans=(TOOL,))
    new_server = server_cert(pki.ca)
    async with serving(reloading.credentials) as p:
        # Written in place, in the wrong order, with a pause half-way.
        pki.tls.cert_file.write_bytes(new_server.cert_pem[: len(new_server.cert_pem) // 2])
        assert await served_serial(p, pki.ca, client) == pki.server.serial
        assert (await who(p, channel_credentials(pki.ca, client)))["identity"]["spiffe_id"] == TOOL

        pki.tls.cert_file.write_bytes(new_server.cert_pem)  # the key is still the old one
        assert await served_serial(p, pki.ca, client) == pki.server.serial

        pki.tls.key_file.write_bytes(new_server.key_pem[:100])
        assert await served_serial(p, pki.ca, client) == pki.server.serial
        assert reloading.material.serial == pki.server.serial

        pki.tls.key_file.write_bytes(new_server.key_pem)
        assert await served_serial(p, pki.ca, client) == new_server.serial

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    reasons = " | ".join(r.getMessage() for r in warnings)
    assert "incomplete PEM" in reasons
    assert "does not belong" in reasons
    # Logged once per distinct content, however many handshakes saw it.
    assert len(warnings) == 3, reasons
    assert any(
        f"{new_server.serial:x}" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO
    )
    for record in caplog.records:
        text = record.getMessage()
        assert "PRIVATE KEY" not in text
        assert "BEGIN" not in text
        for secret_line in new_server.key_pem.decode().splitlines()[1:-1]:
            assert secret_line[:16] not in text


def test_fetch_returns_nothing_when_unchanged(pki: Pki) -> None:
    reloading = ReloadingServerCredentials(pki.tls)
    assert reloading.fetch() is None
    os.utime(pki.tls.cert_file)  # touched, same content
    install(pki.tls.key_file, pki.server.key_pem)  # new inode, same content
    assert reloading.fetch() is None
    new_server = server_cert(pki.ca)
    install(pki.tls.key_file, new_server.key_pem)
    install(pki.tls.cert_file, new_server.cert_pem)
    assert isinstance(reloading.fetch(), grpc.ServerCertificateConfiguration)
    assert reloading.fetch() is None
    assert reloading.material.serial == new_server.serial


def test_missing_file_keeps_the_old_material(pki: Pki) -> None:
    reloading = ReloadingServerCredentials(pki.tls)
    pki.tls.cert_file.unlink()
    assert reloading.fetch() is None
    assert reloading.material.serial == pki.server.serial


def test_not_yet_valid_certificate_is_retried_later(pki: Pki) -> None:
    clock = [dt.datetime.now(dt.UTC).timestamp()]
    reloading = ReloadingServerCredentials(
        pki.tls, clock=lambda: clock[0], retry_failed_after_s=30.0
    )
    now = dt.datetime.fromtimestamp(clock[0], dt.UTC)
    future = issue_cert(
        pki.ca, dns_sans=("localhost",), is_server=True, not_before=now + dt.timedelta(minutes=1)
    )
    install(pki.tls.key_file, future.key_pem)
    install(pki.tls.cert_file, future.cert_pem)
    assert reloading.fetch() is None
    clock[0] += 10  # same content, not retried yet
    assert reloading.fetch() is None
    clock[0] += 60  # now valid, and past the retry interval
    assert reloading.fetch() is not None
    assert reloading.material.serial == future.serial
