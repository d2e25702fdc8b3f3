"""Outbound networking, read once: the proxies the environment names, and the TLS the
vault is reached with (its private CA bundle, piigate's client certificate).

Vault TLS is validated here in full, by building the context the vault client will use,
so `piigate check-config` reports a bad bundle or a mismatched key pair; the vault's
`piigate.vault.tls.VaultTls` builds it the same way again on every reload.

With `ca_file` the vault's certificate must chain to that bundle and only to it (the
system's roots are not consulted: a private vault has no business being vouched for by a
public CA). Without it, the system's roots apply, as for every other https:// fetch.
Host names are always checked, TLS 1.2 at least.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piigate.config.reader import Reader
from piigate.config.secrets import SecretFileInvalid, check_key_file, read_tls_material
from piigate.transport.proxies import Proxies, proxies_from_environment

VAULT_TLS_KEYS = frozenset({"ca_file", "client_cert_file", "client_key_file"})


class VaultTlsInvalid(Exception):
    """Vault TLS files that cannot be used; the message names the file, never content."""


@dataclass(frozen=True, slots=True)
class VaultTlsFiles:
    ca_file: Path | None  # PEM roots for the vault's certificate (None: the system's)
    client_cert_file: Path | None  # PEM chain, leaf first (mutual TLS)
    client_key_file: Path | None  # its PEM private key, unencrypted and private

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.ca_file, self.client_cert_file, self.client_key_file) if p)


def read_proxies(r: Reader) -> Proxies:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY (either case) from the environment, once."""
    proxies, problems = proxies_from_environment(r.environ)
    for problem in problems:
        r.problems.append(problem)
    return proxies


def read_vault_tls(r: Reader, v: Mapping[str, Any]) -> VaultTlsFiles | None:
    """`[vault] ca_file`, `client_cert_file`, `client_key_file`, checked by building the
    context; None when none is set."""
    if not VAULT_TLS_KEYS & set(v):
        return None
    before = len(r.problems)
    paths = {key: r.file_path(r.get(v, key, "vault", str, ""), f"vault.{key}") or None
             if key in v else None for key in sorted(VAULT_TLS_KEYS)}
    if (paths["client_cert_file"] is None) != (paths["client_key_file"] is None):
        r.problem("vault.client_cert_file", "give both client_cert_file and client_key_file "
                  "(mutual TLS), or neither")
        return None
    url = v.get("url")
    if isinstance(url, str) and not url.startswith("https://"):
        r.problem(f"vault.{min(k for k in VAULT_TLS_KEYS if k in v)}",
                  "needs an https:// vault.url")
        return None
    files = VaultTlsFiles(paths["ca_file"], paths["client_cert_file"], paths["client_key_file"])
    if len(r.problems) > before:
        return files  # a path is already wrong: nothing more to learn from the files
    try:
        vault_ssl_context(files)
    except VaultTlsInvalid as exc:
        r.problem(_key_of(files, exc), str(exc))
    return files


def _key_of(files: VaultTlsFiles, exc: VaultTlsInvalid) -> str:
    text = str(exc)
    for key, path in (("client_key_file", files.client_key_file),
                      ("client_cert_file", files.client_cert_file), ("ca_file", files.ca_file)):
        if path is not None and text.startswith((str(path), f"cannot read {path}")):
            return f"vault.{key}"
    return "vault.client_cert_file" if files.client_cert_file else "vault.ca_file"


def vault_ssl_context(files: VaultTlsFiles) -> ssl.SSLContext:
    """A verifying client context from `files`, or VaultTlsInvalid saying what is wrong."""
    if files.ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks names; no roots
        try:
            context.load_verify_locations(cadata=_read(files.ca_file).decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise VaultTlsInvalid(f"{files.ca_file}: holds no PEM certificates") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cert, key = files.client_cert_file, files.client_key_file
    if cert is not None and key is not None:
        try:
            check_key_file(key, str(key))
        except SecretFileInvalid as exc:
            raise VaultTlsInvalid(str(exc)) from exc
        _read(cert), _read(key)  # a clear message for a missing, empty or huge file
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise VaultTlsInvalid(f"{cert}, {key}: not a PEM certificate and its unencrypted "
                                  "private key, or they do not belong together") from exc
    return context


def read_tls_file(path: Path) -> bytes:
    """A TLS file's bytes (at most 1 MiB, not empty), or VaultTlsInvalid."""
    return _read(path)


def _read(path: Path) -> bytes:
    return read_tls_material(path, VaultTlsInvalid, refuse_empty=True)
