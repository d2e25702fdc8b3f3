"""Test helper: the real local vault in-process on 127.0.0.1, port 0.

    async with running_local_vault(config) as vault:
        async with aiohttp.ClientSession(headers=vault.admin_headers) as http:
            await http.get(f"{vault.api_url}/ctl/collections")

An admin key with a secret generated for this run is added to the config's keys, so the
handle always carries a key that may do everything (`admin_key`). Pass `clock=` to
control token expiry without sleeping.
"""

from __future__ import annotations

import dataclasses
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate_dev.localvault.app import create_vault_app
from piigate_dev.localvault.boundary import VAULT
from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.policy import ApiKey, admin_key, secret_digest

API_PATH = "/api/pvlt/1.0"
ADMIN_KEY_NAME = "test-admin"


@dataclass(frozen=True)
class LocalVaultHandle:
    """A running local vault: where it listens and a key allowed everything."""

    base_url: str  # http://127.0.0.1:PORT, what Piiano clients are configured with
    admin_key: str
    app: web.Application

    @property
    def api_url(self) -> str:
        """`base_url` + `/api/pvlt/1.0`."""
        return self.base_url + API_PATH

    @property
    def admin_headers(self) -> dict[str, str]:
        """`Authorization: Bearer <admin key>`."""
        return {"Authorization": f"Bearer {self.admin_key}"}


@asynccontextmanager
async def running_local_vault(
    config: VaultConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[LocalVaultHandle]:
    """Start the vault on 127.0.0.1:0 (in memory unless `config` says otherwise; over TLS
    with `ssl_context`, then `base_url` is https://)."""
    config = config or VaultConfig()
    secret = secrets.token_urlsafe(24)
    config = dataclasses.replace(config, keys=(*config.keys, admin_key(ADMIN_KEY_NAME, secret)))
    app = await create_vault_app(config, clock=clock)
    runner, url = await start_http_app(app, ListenAddress("127.0.0.1", 0), ssl_context)
    try:
        yield LocalVaultHandle(url, secret, app)
    finally:
        await runner.cleanup()


def regenerate_key(vault: LocalVaultHandle, name: str, new_secret: str) -> None:
    """Give key `name` a new secret and revoke the old one, as Piiano's `pvault iam regen`
    does: from now on the vault accepts only `new_secret` for that key. The local vault's
    keys are fixed by its config, so the running vault's key tuple is replaced in place
    (test-only: it is a frozen dataclass, read afresh by every request)."""
    running = vault.app[VAULT]
    keys = tuple(
        ApiKey(key.name, secret_digest(new_secret), key.policies) if key.name == name else key
        for key in running.keys
    )
    if keys == running.keys:
        raise KeyError(name)
    object.__setattr__(running, "keys", keys)
