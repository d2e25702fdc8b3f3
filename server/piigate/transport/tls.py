"""The gateway's TLS material, reloaded from disk without a restart.

grpc asks `ReloadingServerCredentials.fetch` before each new handshake; it re-reads the
certificate chain, key and client trust bundle when their content changed. A reload never
replaces good material with bad: half-written, mismatched or expired files keep the old
material and are logged by file name and problem, never by content. `check` does the same
on SIGHUP and whenever the file watcher (piigate.config.secrets) sees the files change,
so a broken rotation is reported and counted before any handshake needs it.

Client keys are not checked for strength here: grpc's Python API offers no verification
callback and no minimum key size for the handshake (checked on grpcio 1.85), so a client
certificate with, say, an RSA-1024 key completes the handshake. `piigate.identity.peer`
(its rule 4) then refuses that certificate as an identity, holding client keys to the same
minimums as token keys (`piigate.tokens.keys`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from piigate.config.secrets import read_tls_material

log = logging.getLogger(__name__)


class TlsMaterialInvalid(Exception):
    """TLS files that cannot be served. The message names the file and the problem, never
    the content, so it is safe to log."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server's TLS material lives on disk."""

    cert_file: Path  # PEM certificate chain, leaf first
    key_file: Path  # PEM private key, unencrypted
    client_ca_file: Path | None  # PEM roots trusted for client certificates


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """One consistent, validated set of TLS material."""

    cert_chain_pem: bytes
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None
    serial: int  # of the leaf
    not_after: dt.datetime  # of the leaf
    digest: str  # SHA-256 over all three, to tell a real change from a touch


def load_tls_material(
    cert_chain_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None, now: dt.datetime
) -> TlsMaterial:
    """Validate raw PEM as one servable set; `TlsMaterialInvalid` says what is wrong.

    Checks: every PEM block complete (a half-written file is refused, not served with a
    block missing), the key is the leaf's key, the leaf is valid at `now`, the client
    bundle (when given) holds at least one certificate.
    """
    chain = _certificates(cert_chain_pem, "certificate file")
    leaf = chain[0]
    _complete_blocks(key_pem, "key file", expected=1)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise TlsMaterialInvalid("key file: not an unencrypted PEM private key") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TlsMaterialInvalid("key file does not belong to the certificate")
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise TlsMaterialInvalid("certificate is not valid now (expired or not yet valid)")
    if client_ca_pem is not None:
        _certificates(client_ca_pem, "client CA file")
    return TlsMaterial(
        cert_chain_pem,
        key_pem,
        client_ca_pem,
        leaf.serial_number,
        leaf.not_valid_after_utc,
        _digest(cert_chain_pem, key_pem, client_ca_pem),
    )


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    blocks = _complete_blocks(pem, what, expected=None)
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TlsMaterialInvalid(f"{what}: not readable PEM certificates") from exc
    if len(certs) != blocks or pem.count(b"-----BEGIN CERTIFICATE-----") != blocks:
        raise TlsMaterialInvalid(f"{what}: holds something besides certificates")
    return certs


def _complete_blocks(pem: bytes, what: str, expected: int | None) -> int:
    begins, ends = pem.count(b"-----BEGIN "), pem.count(b"-----END ")
    if begins == 0 or begins != ends or not pem.rstrip().endswith(b"-----"):
        raise TlsMaterialInvalid(f"{what}: incomplete PEM (half-written?)")
    if expected is not None and begins != expected:
        raise TlsMaterialInvalid(f"{what}: expected {expected} PEM block(s), found {begins}")
    return begins




class ReloadingServerCredentials:
    """`grpc.dynamic_ssl_server_credentials` over files that may be replaced at any time.

    grpc calls `fetch` before every new TLS handshake (checked on grpcio 1.85), on one of
    its own threads. `fetch` reads the three files and compares their SHA-256 with the
    material in use: a content hash rather than mtimes, because Linux file timestamps are
    coarse (a few ms) and a same-size key rewritten in place can keep its mtime. The files
    are a few KB and handshakes are rare on long-lived HTTP/2 connections, so the read is
    cheap. Only a real change is validated and returned as a new
    `grpc.ssl_server_certificate_configuration`; connections already open keep the
    material they were made with. Invalid new material keeps the old and logs a warning
    once per distinct content (again after `retry_failed_after_s`, so a certificate that
    was not yet valid is picked up once it is).

    `require_client_auth=True` (the default, and required for any peer selector): every
    client must present a certificate chaining to `client_ca_file`, else the handshake
    fails. `False`: TLS only; grpc's Python API then does not even *request* a client
    certificate (GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE), so `peer_identity` is always
    None and callers can only be bearer-token callers. There is no "request but don't
    require" mode, so mTLS and certificate-less callers cannot share one port.
    """

    def __init__(
        self,
        files: TlsFiles,
        *,
        require_client_auth: bool = True,
        clock: Callable[[], float] = time.time,
        retry_failed_after_s: float = 30.0,
    ) -> None:
        if require_client_auth and files.client_ca_file is None:
            raise TlsMaterialInvalid("client authentication needs a client CA file")
        self._files = files
        self._clock = clock
        self._retry_failed_after_s = retry_failed_after_s
        self._lock = threading.Lock()
        self._material = self._load(*self._read())  # at start-up, invalid material is fatal
        self._failed: tuple[str, float] | None = None  # (content digest or error, when)
        self._pending: grpc.ServerCertificateConfiguration | None = None  # taken by `check`
        self._credentials = grpc.dynamic_ssl_server_credentials(
            _configuration(self._material),
            self.fetch,
            require_client_authentication=require_client_auth,
        )

    @property
    def credentials(self) -> grpc.ServerCredentials:
        """For `server.add_secure_port(address, credentials)`."""
        return self._credentials

    @property
    def material(self) -> TlsMaterial:
        """The material new handshakes use now."""
        with self._lock:
            return self._material

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc's certificate-configuration fetcher: new material, or None for no change.

        Never raises: grpc would log the exception text and treat it as a failure anyway.
        """
        try:
            with self._lock:
                if self._pending is not None:  # `check` took new material for grpc
                    pending, self._pending = self._pending, None
                    return pending
                return self._reload_if_changed()
        except Exception as exc:
            log.error(
                "TLS material check failed unexpectedly (%s); keeping the current one",
                type(exc).__name__,
            )
            return None

    def check(self) -> bool:
        """Re-read the files now (SIGHUP, or a change `piigate.config.secrets.FileWatcher`
        saw): True when new material was taken (the next handshake gets it), False when
        the files hold the material in use. New material that cannot be served raises
        TlsMaterialInvalid, and the current material stays. Unlike a handshake's check,
        this one does not log: its caller reports the outcome."""
        with self._lock:
            raw = self._read()
            if _digest(*raw) == self._material.digest:
                return False
            material = self._load(*raw)
            self._material, self._failed = material, None
            self._pending = _configuration(material)
            return True

    def _reload_if_changed(self) -> grpc.ServerCertificateConfiguration | None:
        now = self._clock()
        try:
            raw = self._read()
            key = _digest(*raw)
        except TlsMaterialInvalid as exc:
            raw, key = None, str(exc)
        if key == self._material.digest:
            self._failed = None
            return None
        if self._failed is not None:
            failed_key, failed_at = self._failed
            if key == failed_key and now - failed_at < self._retry_failed_after_s:
                return None
        try:
            if raw is None:
                raise TlsMaterialInvalid(key)
            material = self._load(*raw)
        except TlsMaterialInvalid as exc:
            self._failed = (key, now)
            log.warning(
                "TLS material not reloaded, still serving certificate serial %x: %s",
                self._material.serial,
                exc,
            )
            return None
        self._material, self._failed = material, None
        log.info(
            "TLS material reloaded: certificate serial %x, valid until %s",
            material.serial,
            material.not_after.isoformat(),
        )
        return _configuration(material)

    def _read(self) -> tuple[bytes, bytes, bytes | None]:
        f = self._files
        client_ca = _read(f.client_ca_file) if f.client_ca_file is not None else None
        return _read(f.cert_file), _read(f.key_file), client_ca

    def _load(self, cert: bytes, key: bytes, client_ca: bytes | None) -> TlsMaterial:
        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        try:
            return load_tls_material(cert, key, client_ca, now)
        except TlsMaterialInvalid as exc:
            f = self._files
            names = ", ".join(str(p) for p in (f.cert_file, f.key_file, f.client_ca_file) if p)
            raise TlsMaterialInvalid(f"{exc} (files: {names})") from exc


def _read(path: Path) -> bytes:
    return read_tls_material(path, TlsMaterialInvalid, refuse_empty=False)


def _digest(cert: bytes, key: bytes, client_ca: bytes | None) -> str:
    digest = hashlib.sha256()
    for part in (cert, key, client_ca or b""):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(material.key_pem, material.cert_chain_pem)],
        root_certificates=material.client_ca_pem,
    )
