"""The vault's TLS client context, reloaded from disk without a restart.

The context (built by `piigate.config.network.vault_ssl_context`: the private CA bundle,
the client certificate for mutual TLS) is passed per request (`ssl=` on the vault's
requests only), so the JWKS and discovery fetches that share the HTTP session keep the
system's roots. A reload builds a new context and swaps it in whole: connections already
pooled keep the one they were opened with, new connections get the new one, and nothing
in flight is dropped. A reload that fails keeps the current context.
"""

from __future__ import annotations

import hashlib
import ssl

from piigate.config.network import VaultTlsFiles, read_tls_file, vault_ssl_context


class VaultTls:
    """The vault's current client context; `reload` re-reads the files if they changed."""

    def __init__(self, files: VaultTlsFiles) -> None:
        self._files = files
        self._digest = self._read_digest()
        self._context = vault_ssl_context(files)  # at start-up, a failure is fatal

    @property
    def files(self) -> VaultTlsFiles:
        return self._files

    @property
    def context(self) -> ssl.SSLContext:
        """For `ssl=` on the next request."""
        return self._context

    def reload(self) -> bool:
        """True when the files changed and the new context is taken; VaultTlsInvalid (the
        current context stays) when they changed into something unusable."""
        digest = self._read_digest()
        if digest == self._digest:
            return False
        self._context = vault_ssl_context(self._files)
        self._digest = digest
        return True

    def _read_digest(self) -> str:
        digest = hashlib.sha256()
        for path in self._files.paths:
            digest.update(hashlib.sha256(read_tls_file(path)).digest())
        return digest.hexdigest()
