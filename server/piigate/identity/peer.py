"""Stage 1, transport half: which workload is on the other end of the mTLS connection.

grpc verifies the client certificate chain against the trust bundle during the handshake;
this module only reads names out of the verified leaf and compares them. Rules:

1. Identity comes from the leaf's subjectAltName extension only, never from the subject CN
   (RFC 6125 §6.4.4; the SPIFFE X.509-SVID spec ignores the subject). grpc's own
   `context.peer_identities()` falls back to the CN for a certificate without SANs, so it
   is not used.
2. The names are read from the DER of `x509_pem_cert`, not from grpc's string properties
   (`peer_uri`, `peer_dns`, `peer_spiffe_id`): those are C strings cut at the first NUL, so
   a SAN `victim.internal\\0.evil.example` shows up there as `victim.internal` (checked on
   grpcio 1.85), and `peer_spiffe_id` does not check SPIFFE ID syntax.
3. Matching is exact equality on one kind of name: no prefixes, no wildcards, no URI
   normalisation. The only folding is ASCII lower-casing of DNS names (RFC 4343 §3).
4. A certificate whose key is weaker than what token keys must be
   (`piigate.tokens.keys`: RSA at least `MIN_RSA_BITS` = 2048 bits and not ROCA-weak;
   EC on a curve of at least 256 bits; Ed25519 or Ed448) names nothing: grpc's Python API
   has no hook to refuse such a key during the handshake, so the handshake succeeds and
   the identity is refused here instead.
5. Reading never raises. A certificate grpc accepted but that cannot be read strictly
   (invalid version, duplicated extension, unsupported key or name type, bad DER) names
   nothing: with no names it matches no selector, so a profile that requires a peer
   refuses the call (CALLER_PEER_NOT_ALLOWED, or CALLER_WITHOUT_PROFILE for a caller known
   by its certificate alone), the same way as for a certificate with the wrong names.

Serving TLS material that reloads without a restart is `piigate.transport.tls`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from piigate.tokens.keys import MIN_RSA_BITS, is_roca_weak

log = logging.getLogger(__name__)

#: The smallest EC key accepted in a client certificate (P-256's size; rule 4).
MIN_EC_BITS = 256

# --- identity from the auth context ---------------------------------------------------

SPIFFE_PREFIX = "spiffe://"
# SPIFFE-ID.md §2.1-2.3 (the rules go-spiffe's `spiffeid` package enforces): the trust
# domain is lowercase [a-z0-9._-] and at most 255 bytes; path segments are [a-zA-Z0-9._-],
# never empty, "." or ".."; no query, fragment, port, userinfo or percent-encoding; 2048
# bytes at most. So a valid SPIFFE ID has one spelling, and equality needs no folding:
# the trust domain is already lowercase and the path is case-sensitive.
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_MAX_SPIFFE_ID = 2048
# Host names as found in certificates (RFC 1123 labels; `_` tolerated for internal names).
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# Keys grpc sets only when the peer presented a (verified) certificate.
_X509_KEYS = (
    "x509_pem_cert",
    "x509_subject",
    "x509_common_name",
    "x509_subject_alternative_name",
    "peer_uri",
    "peer_dns",
)


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The names a verified client certificate carries in its subjectAltName.

    `spiffe_id` is set only when the certificate has exactly one URI SAN, that URI is a
    valid SPIFFE ID, and the certificate is not a CA (X.509-SVID §2, §4.1). The CN is
    never part of an identity.
    """

    spiffe_id: str | None
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]


_NO_NAMES = PeerIdentity(None, (), ())


def is_spiffe_id(text: str) -> bool:
    """Whether `text` is a SPIFFE ID in its one valid spelling (see `_TRUST_DOMAIN`)."""
    if len(text) > _MAX_SPIFFE_ID or not text.startswith(SPIFFE_PREFIX):
        return False
    trust_domain, slash, path = text[len(SPIFFE_PREFIX) :].partition("/")
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return False
    if not slash:
        return True
    return all(
        _PATH_SEGMENT.fullmatch(s) is not None and s not in (".", "..") for s in path.split("/")
    )


def peer_identity(auth_context: Mapping[str, Iterable[bytes]]) -> PeerIdentity | None:
    """The identity in grpc's `context.auth_context()`; None when the peer presented no
    certificate (plaintext, TLS without client auth, or no certificate sent).

    A certificate that names nothing usable (CN only, unreadable) gives an identity with
    no names, which matches no selector.
    """
    if not any(key in auth_context for key in _X509_KEYS):
        return None
    pems = list(auth_context.get("x509_pem_cert", ()))
    if pems:
        # grpc puts exactly the verified leaf here; anything else is not understood.
        return identity_from_certificate(pems[0]) if len(pems) == 1 else _NO_NAMES
    # Fallback for a grpc that does not export the PEM: its typed properties, with their
    # NUL caveat (rule 2). The untyped `x509_subject_alternative_name` mixes URIs, DNS
    # names and IPs in one list, so it is never used.
    return _identity(
        _ascii(auth_context.get("peer_uri", ())),
        _ascii(auth_context.get("peer_dns", ())),
        is_ca=False,
    )


def identity_from_certificate(pem: bytes) -> PeerIdentity:
    """The identity of one PEM certificate, read from its subjectAltName extension.

    Never raises (rule 5): an unreadable certificate or a weak key (rule 4) names nothing.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
        weakness = key_weakness(cert.public_key())
        if weakness is not None:
            log.warning("client certificate refused as an identity: %s", weakness)
            return _NO_NAMES
        extensions = cert.extensions
        try:
            san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return _NO_NAMES
        try:
            is_ca = extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except Exception as exc:
        # Rule 5: grpc accepted it, cryptography cannot read it strictly (ValueError,
        # InvalidVersion, DuplicateExtension, UnsupportedGeneralNameType, ...): fail closed.
        log.warning("client certificate unreadable, no identity: %s", type(exc).__name__)
        return _NO_NAMES
    return _identity(uris, dns, is_ca=is_ca)


def key_weakness(key: object) -> str | None:
    """Why a certificate's public key is too weak to identify a workload (rule 4), as a
    short description (key type and size, never key material); None when it is strong."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"RSA key of {key.key_size} bits (at least {MIN_RSA_BITS} required)"
        if is_roca_weak(key.public_numbers().n):
            return "RSA key with the ROCA fingerprint (CVE-2017-15361)"
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            return f"EC key on {key.curve.name} (at least {MIN_EC_BITS} bits required)"
        return None
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    return f"unsupported key type {type(key).__name__}"


def _identity(uris: Iterable[str], dns: Iterable[str], *, is_ca: bool) -> PeerIdentity:
    uri_sans, dns_sans = tuple(uris), tuple(dns)
    one = uri_sans[0] if len(uri_sans) == 1 else None
    spiffe_id = one if one is not None and not is_ca and is_spiffe_id(one) else None
    return PeerIdentity(spiffe_id, uri_sans, dns_sans)


def _ascii(values: Iterable[bytes]) -> list[str]:
    return [v.decode("ascii") for v in values if v.isascii()]


# --- selectors ------------------------------------------------------------------------


class SelectorInvalid(ValueError):
    """A peer selector that is not `spiffe://...`, `dns:NAME` or `uri:URI`."""


@dataclass(frozen=True, slots=True)
class PeerSelector:
    """One name a profile accepts: a SPIFFE ID, a DNS SAN or a (non-SPIFFE) URI SAN."""

    kind: Literal["spiffe", "dns", "uri"]
    value: str  # DNS names lowercased; the others exactly as written

    def __str__(self) -> str:
        return self.value if self.kind == "spiffe" else f"{self.kind}:{self.value}"


def parse_selector(text: str) -> PeerSelector:
    """Parse and validate a selector; config loading calls this so mistakes fail at start-up.

    `uri:spiffe://...` is refused: a SPIFFE ID is only ever matched through the X.509-SVID
    rules (exactly one URI SAN), which a plain URI match would bypass.
    """
    if text.startswith(SPIFFE_PREFIX):
        if not is_spiffe_id(text):
            raise SelectorInvalid("not a valid SPIFFE ID (lowercase trust domain, no '/' at end)")
        return PeerSelector("spiffe", text)
    kind, sep, value = text.partition(":")
    if sep and kind == "dns":
        labels = value.split(".")
        if len(value) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise SelectorInvalid("dns: needs an exact host name (no wildcards, no final dot)")
        return PeerSelector("dns", value.lower())
    if sep and kind == "uri":
        if not value.isascii() or not value.isprintable() or " " in value:
            raise SelectorInvalid("uri: needs a URI of printable ASCII without spaces")
        if not _URI_SCHEME.match(value):
            raise SelectorInvalid("uri: needs an absolute URI with a scheme")
        if value.lower().startswith("spiffe:"):
            raise SelectorInvalid("write a SPIFFE ID bare (spiffe://...), not as uri:")
        return PeerSelector("uri", value)
    raise SelectorInvalid("a selector is spiffe://TRUST_DOMAIN/PATH, dns:NAME or uri:URI")


def matches(identity: PeerIdentity, selector: str | PeerSelector) -> bool:
    """Whether `identity` carries exactly the name `selector` names.

    A string selector is parsed first (`SelectorInvalid` if malformed). SPIFFE IDs and
    URIs compare as exact strings (RFC 3986 §6.2.1 simple comparison: no normalisation, so
    a difference can only cause a refusal, never an acceptance). DNS names compare after
    ASCII lower-casing (RFC 4343 §3); a non-ASCII name never matches.
    """
    s = selector if isinstance(selector, PeerSelector) else parse_selector(selector)
    if s.kind == "spiffe":
        return identity.spiffe_id is not None and identity.spiffe_id == s.value
    if s.kind == "uri":
        return s.value in identity.uri_sans
    return any(name.isascii() and name.lower() == s.value for name in identity.dns_sans)
