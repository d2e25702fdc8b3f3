"""Peer identity: auth-context parsing, selector matching, TLS material validation."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from piigate.identity.peer import (
    PeerIdentity,
    PeerSelector,
    SelectorInvalid,
    is_spiffe_id,
    key_weakness,
    matches,
    parse_selector,
    peer_identity,
)
from piigate.transport.tls import TlsMaterialInvalid, load_tls_material
from tests.support.pki import CertificateAuthority, IssuedCert, issue_cert, make_ca, server_cert

TOOL = "spiffe://example.org/ns/a/sa/support-tool"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca("example.org", tmp_path_factory.mktemp("pki"))


def context_for(cert: IssuedCert) -> dict[str, list[bytes]]:
    """What grpc.aio puts in `auth_context()` for a verified client (trimmed)."""
    return {
        "transport_security_type": [b"ssl"],
        "x509_common_name": [b""],
        "x509_pem_cert": [cert.cert_pem],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
    }


def identity(
    spiffe_id: str | None = None, uris: tuple[str, ...] = (), dns: tuple[str, ...] = ()
) -> PeerIdentity:
    return PeerIdentity(spiffe_id, uris or ((spiffe_id,) if spiffe_id else ()), dns)


# --- SPIFFE ID syntax -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [TOOL, "spiffe://example.org", "spiffe://td_1.example-2/Mixed.Case/a_b-c.d"],
)
def test_valid_spiffe_ids(text: str) -> None:
    assert is_spiffe_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "spiffe://Example.org/ns/a",  # trust domain must be lowercase
        "SPIFFE://example.org/ns/a",
        "spiffe://example.org/ns/a/",  # trailing slash
        "spiffe://example.org//a",  # empty segment
        "spiffe://example.org/ns/../b",
        "spiffe://example.org/./b",
        "spiffe://example.org:8443/a",  # port
        "spiffe://user@example.org/a",  # userinfo
        "spiffe://example.org/a?x=1",
        "spiffe://example.org/a#f",
        "spiffe://example.org/a%2Fb",  # no percent-encoding
        "spiffe:///a",  # empty trust domain
        "spiffe://example.org/a\x00b",
        "spiffe://example.org/" + "a" * 2048,
        "https://example.org/a",
    ],
)
def test_invalid_spiffe_ids(text: str) -> None:
    assert not is_spiffe_id(text)


# --- selectors --------------------------------------------------------------------------
def test_selector_kinds() -> None:
    assert parse_selector(TOOL) == PeerSelector("spiffe", TOOL)
    assert parse_selector("dns:Support-Tool.Internal") == PeerSelector(
        "dns", "support-tool.internal"
    )
    assert parse_selector("uri:https://Tools.example/a") == PeerSelector(
        "uri", "https://Tools.example/a"
    )
    assert str(parse_selector("dns:a.internal")) == "dns:a.internal"
    assert str(parse_selector(TOOL)) == TOOL


@pytest.mark.parametrize(
    "text",
    [
        "",
        "support-tool",
        "spiffe://Example.org/a",
        "spiffe://example.org/a/",
        "uri:spiffe://example.org/a",  # SPIFFE only through the SVID rules
        "uri:SPIFFE://example.org/a",
        "uri:no-scheme",
        "uri:https://a.example/with space",
        "uri:https://\u00e9.example/",
        "dns:",
        "dns:*.internal",
        "dns:a.internal.",
        "dns:a..internal",
        "dns:-a.internal",
        "dns:\u212aelvin.internal",  # KELVIN SIGN lower-cases to "k"
        "DNS:a.internal",
        "cn:support-tool",
        "san:a.internal",
    ],
)
def test_malformed_selectors_are_refused(text: str) -> None:
    with pytest.raises(SelectorInvalid):
        parse_selector(text)
    with pytest.raises(SelectorInvalid):
        matches(identity(TOOL), text)


# --- matching ---------------------------------------------------------------------------
def test_spiffe_selector_matches_only_the_exact_id() -> None:
    assert matches(identity(TOOL), TOOL)
    assert matches(identity(TOOL), parse_selector(TOOL))
    for other in (
        TOOL + "-evil",  # shares a prefix
        TOOL + "/extra",
        "spiffe://example.org/ns/a/sa/Support-Tool",  # paths are case-sensitive
        "spiffe://example.org.evil/ns/a/sa/support-tool",
        "spiffe://example.org/ns/a/sa",
    ):
        assert not matches(identity(other), TOOL), other
        assert not matches(identity(TOOL), other), other


def test_spiffe_selector_needs_an_svid_not_just_a_uri_san() -> None:
    # Two URI SANs: no SPIFFE ID, even though one of them is the selector.
    two = PeerIdentity(None, (TOOL, "spiffe://example.org/other"), ())
    assert not matches(two, TOOL)


def test_dns_selector_is_exact_and_case_insensitive() -> None:
    peer = identity(dns=("Support-Tool.Internal", "other.internal"))
    assert matches(peer, "dns:support-tool.internal")
    assert matches(peer, "dns:SUPPORT-TOOL.INTERNAL")
    assert matches(peer, "dns:other.internal")
    for other in ("dns:tool.internal", "dns:support-tool.internal.evil", "dns:support-tool"):
        assert not matches(peer, other), other


def test_wildcard_and_odd_dns_sans_never_match() -> None:
    assert not matches(identity(dns=("*.internal",)), "dns:a.internal")
    assert not matches(identity(dns=("a.internal\x00.evil.example",)), "dns:a.internal")
    assert not matches(identity(dns=("\u212a.internal",)), "dns:k.internal")


def test_uri_selector_is_exact_and_case_sensitive() -> None:
    peer = identity(uris=("https://tools.example/support", "urn:x:y"))
    assert matches(peer, "uri:https://tools.example/support")
    assert matches(peer, "uri:urn:x:y")
    for other in (
        "uri:https://tools.example/Support",
        "uri:https://tools.example/support/",
        "uri:https://tools.example/",
        "uri:HTTPS://tools.example/support",
    ):
        assert not matches(peer, other), other


def test_no_names_match_nothing() -> None:
    nothing = PeerIdentity(None, (), ())
    for selector in (TOOL, "dns:a.internal", "uri:https://a.example/"):
        assert not matches(nothing, selector)


# --- auth context parsing ---------------------------------------------------------------
def test_no_certificate_is_no_identity() -> None:
    assert peer_identity({}) is None
    # What grpc.aio reports for TLS without a client certificate.
    tls_only = {
        "transport_security_type": [b"ssl"],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
        "ssl_tls_version": [b"TLSv1.3"],
    }
    assert peer_identity(tls_only) is None


def test_one_spiffe_uri_san_is_the_spiffe_id(ca: CertificateAuthority) -> None:
    cert = issue_cert(ca, uri_sans=(TOOL,), dns_sans=("a.internal",), cn="ignored")
    assert peer_identity(context_for(cert)) == PeerIdentity(TOOL, (TOOL,), ("a.internal",))


def test_two_uri_sans_give_no_spiffe_id(ca: CertificateAuthority) -> None:
    uris = (TOOL, "spiffe://example.org/ns/a/sa/other")
    cert = issue_cert(ca, uri_sans=uris)
    assert peer_identity(context_for(cert)) == PeerIdentity(None, uris, ())


def test_invalid_spiffe_uri_is_a_uri_san_only(ca: CertificateAuthority) -> None:
    upper = "spiffe://Example.org/ns/a"  # grpc's peer_spiffe_id accepts this one
    cert = issue_cert(ca, uri_sans=(upper,))
    assert peer_identity(context_for(cert)) == PeerIdentity(None, (upper,), ())


def test_non_spiffe_single_uri_is_no_spiffe_id(ca: CertificateAuthority) -> None:
    cert = issue_cert(ca, uri_sans=("https://tools.example/a",))
    assert peer_identity(context_for(cert)) == PeerIdentity(None, ("https://tools.example/a",), ())


def test_cn_only_certificate_names_nothing(ca: CertificateAuthority) -> None:
    cert = issue_cert(ca, cn="support-tool")
    context = {**context_for(cert), "x509_common_name": [b"support-tool"]}
    assert peer_identity(context) == PeerIdentity(None, (), ())


def test_ca_certificate_is_not_an_svid(ca: CertificateAuthority) -> None:
    # X.509-SVID §4.1: a leaf SVID has cA=false.
    cert = issue_cert(ca, uri_sans=(TOOL,), is_ca=True)
    assert peer_identity(context_for(cert)) == PeerIdentity(None, (TOOL,), ())


def test_nul_in_san_is_kept_from_the_der(ca: CertificateAuthority) -> None:
    # grpc's peer_dns / peer_uri would show these cut at the NUL.
    cert = issue_cert(
        ca, dns_sans=("victim.internal\x00.evil.example",), uri_sans=(TOOL + "\x00x",)
    )
    context = {
        **context_for(cert),
        "peer_dns": [b"victim.internal"],
        "peer_uri": [TOOL.encode()],
        "peer_spiffe_id": [TOOL.encode()],
    }
    parsed = peer_identity(context)
    assert parsed == PeerIdentity(None, (TOOL + "\x00x",), ("victim.internal\x00.evil.example",))
    assert not matches(parsed, TOOL)
    assert not matches(parsed, "dns:victim.internal")


def test_unreadable_or_ambiguous_pem_names_nothing(ca: CertificateAuthority) -> None:
    cert = issue_cert(ca, uri_sans=(TOOL,))
    assert peer_identity({"x509_pem_cert": [b"not a certificate"]}) == PeerIdentity(None, (), ())
    assert peer_identity({"x509_pem_cert": [cert.cert_pem, cert.cert_pem]}) == PeerIdentity(
        None, (), ()
    )


def _leaf_with_ian(ca: CertificateAuthority, ian_uri: str = TOOL) -> bytes:
    """DER of a leaf with a URI SAN and an IssuerAlternativeName holding the same URI."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(TOOL)]), critical=True
        )
        .add_extension(
            x509.IssuerAlternativeName([x509.UniformResourceIdentifier(ian_uri)]), critical=True
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


_SAN_OID = bytes.fromhex("0603551d11")  # 2.5.29.17 subjectAltName
_IAN_OID = bytes.fromhex("0603551d12")  # 2.5.29.18 issuerAltName, the same length


def _pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_duplicated_extension_names_nothing_and_never_raises(ca: CertificateAuthority) -> None:
    # RFC 5280 §4.2: an extension appears at most once. Turning the IAN OID into the SAN
    # OID keeps every length, so the DER stays well-formed with two SAN extensions; which
    # one is "the" identity would be ambiguous, so the certificate names nothing.
    der = _leaf_with_ian(ca, "spiffe://example.org/ns/a/sa/admin")
    assert der.count(_IAN_OID) == 1
    duplicated = der.replace(_IAN_OID, _SAN_OID)
    context = {**context_for(issue_cert(ca, uri_sans=(TOOL,))), "x509_pem_cert": [_pem(duplicated)]}
    assert peer_identity(context) == PeerIdentity(None, (), ())


@pytest.mark.parametrize("version", [3, 5, 255])
def test_invalid_certificate_version_names_nothing_and_never_raises(
    ca: CertificateAuthority, version: int
) -> None:
    # TBSCertificate.version is [0] EXPLICIT INTEGER: A0 03 02 01 02 for v3. Only v1-v3
    # (0, 1, 2) exist; the signature no longer matters here (grpc checked the chain).
    der = _leaf_with_ian(ca)
    v3 = bytes.fromhex("a003020102")
    assert der.count(v3) == 1
    mangled = der.replace(v3, bytes.fromhex("a0030201") + bytes([version]))
    context = {**context_for(issue_cert(ca, uri_sans=(TOOL,))), "x509_pem_cert": [_pem(mangled)]}
    assert peer_identity(context) == PeerIdentity(None, (), ())


@pytest.mark.parametrize(
    ("make_key", "weak"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), True),  # noqa: S505 - the point
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), False),
        (lambda: ec.generate_private_key(ec.SECP192R1()), True),
        (lambda: ec.generate_private_key(ec.SECP256R1()), False),
        (lambda: ec.generate_private_key(ec.SECP384R1()), False),
        (ed25519.Ed25519PrivateKey.generate, False),
        (lambda: dsa.generate_private_key(key_size=1024), True),  # noqa: S505 - the point
    ],
    ids=["rsa-1024", "rsa-2048", "p-192", "p-256", "p-384", "ed25519", "dsa"],
)
def test_client_keys_are_held_to_the_token_key_minimums(make_key: Any, weak: bool) -> None:
    reason = key_weakness(make_key().public_key())
    assert (reason is not None) is weak
    if reason is not None:
        assert len(reason) < 80  # type and size only, never key material


def test_fallback_to_typed_properties_without_pem() -> None:
    context = {
        "x509_common_name": [b"cn"],
        "x509_subject_alternative_name": [TOOL.encode(), b"a.internal"],
        "peer_uri": [TOOL.encode()],
        "peer_dns": [b"a.internal", b"caf\xc3\xa9.internal"],
    }
    assert peer_identity(context) == PeerIdentity(TOOL, (TOOL,), ("a.internal",))
    # The untyped SAN list alone is not trusted to say which name is which.
    assert peer_identity({"x509_subject_alternative_name": [TOOL.encode()]}) == PeerIdentity(
        None, (), ()
    )


# --- TLS material -----------------------------------------------------------------------
NOW = dt.datetime.now(dt.UTC)


def material_parts(cert: IssuedCert, ca: CertificateAuthority) -> tuple[bytes, bytes, bytes]:
    return cert.cert_pem, cert.key_pem, ca.cert_pem


def test_good_material_loads(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    material = load_tls_material(*material_parts(cert, ca), NOW)
    assert material.serial == cert.serial
    assert material.not_after == cert.cert.not_valid_after_utc
    assert "key_pem" not in repr(material)
    # The same bytes give the same digest (a touch is not a change).
    assert load_tls_material(*material_parts(cert, ca), NOW).digest == material.digest
    assert load_tls_material(cert.cert_pem, cert.key_pem, None, NOW).client_ca_pem is None


def test_chain_with_intermediate_loads(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    material = load_tls_material(cert.cert_pem + ca.cert_pem, cert.key_pem, ca.cert_pem, NOW)
    assert material.serial == cert.serial


@pytest.mark.parametrize("cut", [10, 200, -40])
def test_half_written_files_are_refused(ca: CertificateAuthority, cut: int) -> None:
    cert = server_cert(ca)
    cert_pem, key_pem, bundle = material_parts(cert, ca)
    with pytest.raises(TlsMaterialInvalid, match="certificate file"):
        load_tls_material(cert_pem[:cut], key_pem, bundle, NOW)
    with pytest.raises(TlsMaterialInvalid, match="key file"):
        load_tls_material(cert_pem, key_pem[:cut], bundle, NOW)
    with pytest.raises(TlsMaterialInvalid, match="client CA file"):
        load_tls_material(cert_pem, key_pem, bundle[:cut], NOW)
    # A chain cut inside its second certificate.
    with pytest.raises(TlsMaterialInvalid, match="certificate file"):
        load_tls_material(cert_pem + ca.cert_pem[:cut], key_pem, bundle, NOW)


def test_empty_files_are_refused(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    with pytest.raises(TlsMaterialInvalid):
        load_tls_material(b"", cert.key_pem, ca.cert_pem, NOW)
    with pytest.raises(TlsMaterialInvalid):
        load_tls_material(cert.cert_pem, b"", ca.cert_pem, NOW)


def test_key_of_another_certificate_is_refused(ca: CertificateAuthority) -> None:
    cert, other = server_cert(ca), server_cert(ca)
    with pytest.raises(TlsMaterialInvalid, match="does not belong"):
        load_tls_material(cert.cert_pem, other.key_pem, ca.cert_pem, NOW)


def test_encrypted_key_is_refused(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    encrypted = cert.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(TlsMaterialInvalid, match="unencrypted"):
        load_tls_material(cert.cert_pem, encrypted, ca.cert_pem, NOW)


def test_key_in_the_certificate_file_is_refused(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    with pytest.raises(TlsMaterialInvalid, match="besides certificates"):
        load_tls_material(cert.cert_pem + cert.key_pem, cert.key_pem, ca.cert_pem, NOW)


def test_certificate_outside_its_validity_is_refused(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    parts = material_parts(cert, ca)
    with pytest.raises(TlsMaterialInvalid, match="not valid now"):
        load_tls_material(*parts, NOW + dt.timedelta(days=2))
    with pytest.raises(TlsMaterialInvalid, match="not valid now"):
        load_tls_material(*parts, NOW - dt.timedelta(days=2))


def test_error_messages_carry_no_key_material(ca: CertificateAuthority) -> None:
    cert = server_cert(ca)
    for bad_key in (cert.key_pem[:100], cert.key_pem.replace(b"M", b"!")):
        with pytest.raises(TlsMaterialInvalid) as info:
            load_tls_material(cert.cert_pem, bad_key, ca.cert_pem, NOW)
        text = str(info.value)
        assert "PRIVATE KEY" not in text
        assert cert.key_pem.decode().splitlines()[1][:16] not in text
