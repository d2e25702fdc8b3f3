"""TLS on the wire (a throwaway certificate made at test time), and the client package
standing on its own."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import Unavailable
from tests.support.stack import running_stack


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "piigate test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_path.chmod(0o600)  # piigate refuses a key file others may read
    return cert_path, key_path


async def test_gateway_serves_tls_and_refuses_plaintext(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    overrides = {"server": {"tls_cert_file": str(cert), "tls_key_file": str(key)}}
    async with running_stack(gateway_overrides=overrides) as stack:
        token = await stack.caller_token("support-tool")
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with AsyncDetokenizationClient(
            stack.target, lambda: token, channel_credentials=credentials
        ) as client:
            result = await client.detokenize(stack.user_token("alice"))
        assert result["ssn"].value == "***-**-1234"
        async with AsyncDetokenizationClient(stack.target, lambda: token, timeout_s=2) as plain:
            with pytest.raises(Unavailable) as caught:
                await plain.detokenize(stack.user_token("alice"))
        assert caught.value.reason == "UNAVAILABLE"  # a transport failure: no ErrorInfo


def test_client_package_imports_without_the_server_package() -> None:
    code = (
        "import sys; sys.modules['piigate'] = None\n"  # any import of the server fails
        "import piigate_client, piigate_client.errors, piigate_client.oauth\n"
        "print(piigate_client.DetokenizationClient.__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DetokenizationClient"
