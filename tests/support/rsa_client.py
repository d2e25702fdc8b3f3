"""Test helper: client certificates with RSA keys of a chosen size (`pki` makes P-256
only), for the client-key strength rule of `piigate.identity.peer`.

    credentials = rsa_client_credentials(ca, 1024, uri_sans=("spiffe://example.org/a",))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.pki import CertificateAuthority


def rsa_client_credentials(
    ca: CertificateAuthority, bits: int, *, uri_sans: Sequence[str]
) -> grpc.ChannelCredentials:
    """Channel credentials trusting `ca`, with a client leaf signed by `ca` whose key is
    RSA of `bits` and whose subjectAltName holds `uri_sans`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uri_sans]),
            critical=True,
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem,
        private_key=key_pem,
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )
