"""identity.peer: names out of client certificates, and the selectors profiles name.

Input: the first byte picks a mode. 0: the rest is a PEM document; 1: the rest is DER,
wrapped in PEM by the harness (so mutations reach the certificate's structure); 2: the
rest, one selector per line, matched against the run's own certificate.

Documented errors: none for reading certificates (rule 5: an unreadable certificate
names nothing); `SelectorInvalid` for selectors. Oracles: a SPIFFE ID is only ever one
valid URI SAN; a parsed selector prints back to itself; a certificate's own names match
the selectors made from them.
"""

from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from piigate.identity.peer import (
    PeerIdentity,
    SelectorInvalid,
    identity_from_certificate,
    is_spiffe_id,
    matches,
    parse_selector,
    peer_identity,
)
from tests.fuzz.targets import Finding

SPIFFE_ID = "spiffe://example.org/ns/prod/sa/billing"
DNS_NAME = "billing.internal"
MAX_SELECTORS = 32
_own: PeerIdentity | None = None


def _certificate() -> x509.Certificate:
    """A fresh self-signed leaf with a SPIFFE ID and a DNS name (public material only)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-an-identity")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier(SPIFFE_ID), x509.DNSName(DNS_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


_CERT = None


def setup(workdir: object) -> None:
    global _CERT, _own
    _CERT = _certificate()
    _own = identity_from_certificate(_CERT.public_bytes(Encoding.PEM))
    assert _own.spiffe_id == SPIFFE_ID, _own


def seeds() -> list[bytes]:
    assert _CERT is not None, "setup() first"
    return [b"\x00" + _CERT.public_bytes(Encoding.PEM), b"\x01" + _CERT.public_bytes(Encoding.DER)]


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def fuzz(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    if mode == 2:
        _selectors(rest.decode("utf-8", "replace").split("\n")[:MAX_SELECTORS])
        return
    pem = rest if mode == 0 else _pem(rest)
    identity = identity_from_certificate(pem)
    _check(identity)
    via_grpc = peer_identity({"x509_pem_cert": [pem], "peer_dns": [rest[:64]]})
    if via_grpc != identity:
        raise Finding("peer_identity and identity_from_certificate disagree")


def _check(identity: PeerIdentity | None) -> None:
    if identity is None:
        raise Finding("a presented certificate gave no identity at all")
    if identity.spiffe_id is not None and (
        identity.uri_sans != (identity.spiffe_id,) or not is_spiffe_id(identity.spiffe_id)
    ):
        raise Finding(f"SPIFFE ID {identity.spiffe_id!r} is not exactly one valid URI SAN")


def _selectors(texts: list[str]) -> None:
    assert _own is not None, "setup() first"
    for text in texts:
        try:
            selector = parse_selector(text)
        except SelectorInvalid:
            continue
        if parse_selector(str(selector)) != selector:
            raise Finding(f"selector {text!r} does not print back to itself")
        matches(_own, selector)
    for own in (SPIFFE_ID, f"dns:{DNS_NAME}", f"dns:{DNS_NAME.upper()}"):
        if not matches(_own, own):
            raise Finding(f"the certificate's own name {own!r} does not match it")
