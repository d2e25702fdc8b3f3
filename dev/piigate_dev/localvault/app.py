"""The composition root: `create_vault_app(config)` builds the whole local vault.

It resolves the data key, opens the store, installs the configured collections, opens
the audit sink and wires the routes and the error middleware. Tests pass a fake clock
(`clock=`) and otherwise run the real thing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from aiohttp import web

from piigate_dev.localvault import control_api, data_api
from piigate_dev.localvault.audit import AuditSink
from piigate_dev.localvault.boundary import VAULT, error_middleware
from piigate_dev.localvault.config import VaultConfig
from piigate_dev.localvault.datakey import resolve_data_key
from piigate_dev.localvault.errors import StartupError
from piigate_dev.localvault.schema import CollectionSpec
from piigate_dev.localvault.sealing import Sealer
from piigate_dev.localvault.store import VaultStore
from piigate_dev.localvault.vault import Vault

# Long enough for a detokenize call carrying a few hundred token ids in its query.
MAX_REQUEST_LINE = 64 * 1024


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def install_collections(store: VaultStore, collections: tuple[CollectionSpec, ...]) -> None:
    """Create the configured collections; one already stored must match its definition."""
    for index, spec in enumerate(collections):
        stored = store.collection(spec.name)
        if stored is None:
            store.create_collection(spec)
        elif stored != spec:
            raise StartupError(
                f"config error at collections[{index}]: collection {spec.name!r} differs from "
                "the one already stored in the data file"
            )


async def create_vault_app(
    config: VaultConfig,
    *,
    clock: Callable[[], float] = time.time,
    warn: Callable[[str], None] = _warn,
) -> web.Application:
    """The local vault as an aiohttp application. Raises StartupError (wrong data key,
    unusable key file, conflicting collection) before serving anything."""
    sealer = Sealer(resolve_data_key(config.data_key, config.data_path, warn))
    store = VaultStore.open(config.data_path, sealer)
    try:
        install_collections(store, config.collections)
        audit = AuditSink.open(config.audit_path)
    except BaseException:
        store.close()
        raise
    vault = Vault(store, sealer, config.effective_keys(), audit, clock)
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=config.max_body_bytes,
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[VAULT] = vault
    control_api.add_routes(app.router)
    data_api.add_routes(app.router)

    async def close(_: web.Application) -> None:
        store.close()
        audit.close()

    app.on_cleanup.append(close)
    return app
