"""Test helper: a throwaway PKI made at test time, written as PEM files.

    ca = make_ca("example.org", tmp_path)
    server = issue_cert(ca, dns_sans=("localhost",), ip_sans=("127.0.0.1",), is_server=True)
    client = issue_cert(ca, uri_sans=("spiffe://example.org/ns/a/sa/support-tool",))
    creds = channel_credentials(ca, client)

Keys are P-256 (fast to make), written 0600 (piigate refuses key files others may read).
Every certificate gets a random serial, so a re-issued certificate is told apart from the
old one by its serial alone.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DEFAULT_LIFETIME = dt.timedelta(hours=1)
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed root; `cert_file` is its PEM, usable as a trust bundle."""

    name: str
    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate, its key, and the files they were written to."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path  # the leaf's PEM (the "chain": roots sign leaves directly here)
    key_file: Path  # PKCS#8 PEM, unencrypted

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def serial(self) -> int:
        return self.cert.serial_number


def make_ca(name: str, directory: Path) -> CertificateAuthority:
    """A new root CA called `name`; its certificate is written to `directory/<name>-ca.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} test root")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file = directory / f"{name}-ca.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(name, directory, cert, key, cert_file)


def issue_cert(
    ca: CertificateAuthority,
    *,
    uri_sans: Sequence[str] = (),
    dns_sans: Sequence[str] = (),
    ip_sans: Sequence[str] = (),
    cn: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    is_server: bool = False,
    is_ca: bool = False,
) -> IssuedCert:
    """A leaf signed by `ca`, written to `ca.directory` as `<stem>.pem` and `<stem>.key`.

    No SAN extension at all when every SAN list is empty (a CN-only certificate).
    `is_ca` marks the leaf as a CA (cA=true), which no X.509-SVID may be.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    serial = x509.random_serial_number()
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before or now - _BACKDATE)
        .not_valid_after(not_after or now + _DEFAULT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if is_server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    general_names: list[x509.GeneralName] = [
        *(x509.UniformResourceIdentifier(u) for u in uri_sans),
        *(x509.DNSName(d) for d in dns_sans),
        *(x509.IPAddress(ipaddress.ip_address(i)) for i in ip_sans),
    ]
    if general_names:
        # RFC 5280 §4.2.1.6: critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general_names), critical=not names
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    stem = ca.directory / f"{ca.name}-{'server' if is_server else 'client'}-{serial:x}"
    cert_file, key_file = stem.with_suffix(".pem"), stem.with_suffix(".key")
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_file, _key_pem(key))
    return IssuedCert(cert, key, cert_file, key_file)


def server_cert(ca: CertificateAuthority) -> IssuedCert:
    """A server certificate for loopback: DNS `localhost` and IP 127.0.0.1."""
    return issue_cert(ca, dns_sans=("localhost",), ip_sans=("127.0.0.1",), is_server=True)


def channel_credentials(
    root: CertificateAuthority | bytes, client: IssuedCert | None = None
) -> grpc.ChannelCredentials:
    """`grpc.ssl_channel_credentials(root, key, chain)`; no client certificate when
    `client` is None."""
    root_pem = root.cert_pem if isinstance(root, CertificateAuthority) else root
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=root_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=root_pem,
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a key file as piigate requires one: 0600, created so from the start."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
