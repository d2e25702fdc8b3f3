"""The running vault: its store, keys, audit sink and clock, and the checks every call
makes first (who is calling, which collection). Built once by `piigate_dev.localvault.app`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from piigate_dev.localvault.audit import AuditEvent, AuditSink
from piigate_dev.localvault.errors import CollectionNotFound, KeyInvalid, KeyMissing
from piigate_dev.localvault.policy import ApiKey, authenticate
from piigate_dev.localvault.schema import CollectionSpec
from piigate_dev.localvault.sealing import Sealer
from piigate_dev.localvault.store import VaultStore


@dataclass(frozen=True, slots=True)
class Vault:
    """Everything a handler needs; the clock is injected so tests control expiry."""

    store: VaultStore
    sealer: Sealer
    keys: tuple[ApiKey, ...]
    audit: AuditSink
    clock: Callable[[], float]

    def caller(self, authorization: str | None) -> ApiKey:
        """The key presented as `Authorization: Bearer <secret>`; 401 otherwise."""
        scheme, _, secret = (authorization or "").partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise KeyMissing()
        key = authenticate(self.keys, secret)
        if key is None:
            raise KeyInvalid()
        return key

    def collection(self, key: ApiKey, name: str) -> CollectionSpec:
        """The collection `name` if it exists and `key` may see it; else the same 404."""
        spec = self.store.collection(name) if key.can_see(name) else None
        if spec is None:
            raise CollectionNotFound(collection=name)
        return spec

    def record(self, event: AuditEvent) -> None:
        """Write `event` to the audit log, stamped with the vault's clock."""
        self.audit.write(event, self.clock())
