"""Test helper: the whole piigate stack in-process on loopback, real parts only.

The real local vault and dev issuer (configured exactly as `make demo` configures them),
three migrated users, and the real gRPC gateway on 127.0.0.1:0 with its audit trail in
memory. Only the clock is the test's to set.
"""

from __future__ import annotations

import io
import json
import ssl
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import RunningGateway, start_gateway
from piigate.config import GatewayConfig, parse_config
from piigate.telemetry.tracing import Tracing
from piigate.transport.addresses import ListenAddress
from piigate_client import AsyncDetokenizationClient
from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest
from piigate_dev.devissuer.config import parse_issuer_config
from piigate_dev.devissuer.migration import MigratedUser, VaultTarget, migrate_user
from piigate_dev.localvault.config import load_vault_config
from tests.support.devissuer import DevIssuerHandle, running_dev_issuer
from tests.support.localvault import LocalVaultHandle, running_local_vault
from tests.support.pki import write_private

VAULT_KEY_ENV = {
    "PIIGATE_DEMO_VAULT_KEY_FHIR": "vault_fhir",
    "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "vault_support",
}


@dataclass
class Stack:
    """A running stack and shortcuts to drive it."""

    secrets: demo.Secrets
    vault: LocalVaultHandle
    issuer: DevIssuerHandle
    gateway: RunningGateway
    config: GatewayConfig
    users: dict[str, MigratedUser]
    audit_stream: io.BytesIO  # the chained trail, as the gateway writes it
    _clients: list[AsyncDetokenizationClient] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def audit_text(self) -> str:
        return self.audit_stream.getvalue().decode("ascii")

    def audit_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_text().splitlines()]

    async def caller_token(self, client_id: str, audience: str = "piigate") -> str:
        return await self.issuer.client_token(
            client_id, self.secrets.clients[client_id], audience=audience
        )

    def client(self, credential: str) -> AsyncDetokenizationClient:
        """A client presenting `credential` (a caller token, or anything, for attacks)."""
        client = AsyncDetokenizationClient(self.target, lambda: credential, timeout_s=5.0)
        self._clients.append(client)
        return client

    async def caller(self, client_id: str) -> AsyncDetokenizationClient:
        return self.client(await self.caller_token(client_id))

    def user_token(self, person: str, audience: str | None = None, **extra: Any) -> str:
        """A token for a migrated person, signed in-process by the real issuer's keys."""
        fields: dict[str, Any] = {
            "sub": f"auth0|{person}",
            "pii_token": self.users[person].token_id,
            "audience": audience or demo.SUPPORT_AUDIENCE,
            "scope": "openid",
            **extra,
        }
        return self.issuer.signer.sign_user_token(UserTokenRequest(**fields))


@asynccontextmanager
async def running_stack(
    *,
    gateway_overrides: Mapping[str, Any] | None = None,
    vault_url: str | None = None,
    people: Sequence[tuple[str, Mapping[str, str]]] = demo.PEOPLE,
    extra_issuers: Sequence[Mapping[str, Any]] = (),
    clock: Callable[[], float] = time.time,
    audit_file: Path | None = None,
    dev_issuer_extra: Mapping[str, Any] | None = None,
    migration_binding_key: bytes | None = None,
    environ_extra: Mapping[str, str] | None = None,
    fhir_patients: Mapping[str, str] | None = None,
    tracing: Tracing | None = None,
    vault_ssl: ssl.SSLContext | None = None,
    migration_ssl: ssl.SSLContext | None = None,
    vault_key_dir: Path | None = None,
) -> AsyncIterator[Stack]:
    """Start vault, issuer and gateway with `people` migrated; `vault_url` points the
    gateway elsewhere (faults); `gateway_overrides` merge into the gateway's config;
    `fhir_patients` (person -> FHIR Patient id) also writes those people's patient tags.

    `vault_ssl` serves the vault over TLS (`migration_ssl` is the context the stack's own
    migration calls trust it with); `vault_key_dir` puts each profile's vault API key in
    a 0600 file `<profile>.key` there (`vault_api_key_file`) instead of the environment."""
    secrets = demo.Secrets.generate()
    async with AsyncExitStack() as stack:
        vault_config = load_vault_config_text(demo.vault_config(secrets))
        vault = await stack.enter_async_context(running_local_vault(vault_config,
                                                                       ssl_context=vault_ssl))
        issuer_config = parse_issuer_config(
            tomllib.loads(demo.issuer_config(secrets)), Path("."), {}
        )
        issuer = await stack.enter_async_context(running_dev_issuer(issuer_config, clock))

        users: dict[str, MigratedUser] = {}
        connector = aiohttp.TCPConnector(ssl=migration_ssl) if migration_ssl else None
        async with aiohttp.ClientSession(connector=connector) as http:
            target = VaultTarget(vault.base_url, secrets.vault_admin, "users")
            for person, record in people:
                users[person] = await migrate_user(
                    http, target, issuer.signer, record, subject=f"auth0|{person}",
                    audience=demo.FHIR_AUDIENCE,
                    scope="openid launch/patient patient/Patient.read", azp="fhir-app",
                    binding_key=migration_binding_key,
                    fhir_patient_id=(fhir_patients or {}).get(person),
                )

        data = tomllib.loads(
            demo.gateway_config(issuer.issuer, vault_url or vault.base_url, Path("audit.jsonl"))
        )
        data["audit"] = {"sink": "stdout"}  # replaced by the in-memory sink below
        data["issuers"][0].update(dev_issuer_extra or {})
        data["issuers"] += [dict(i) for i in extra_issuers]
        data["caller"]["issuers"] = ["dev"]  # extra issuers mint subject tokens only
        for section, values in (gateway_overrides or {}).items():
            data[section] = _merge(data.get(section, {}), values)
        environ = {env: getattr(secrets, attr) for env, attr in VAULT_KEY_ENV.items()}
        if vault_key_dir is not None:
            _vault_keys_to_files(data, environ, vault_key_dir)
        environ.update(environ_extra or {})
        config = parse_config(data, environ, Path("."))
        audit_stream = io.BytesIO()
        sink = (ChainedJsonLinesSink.open(audit_file, fsync=False) if audit_file
                else ChainedJsonLinesSink(audit_stream))
        gateway = await start_gateway(
            config, listen=ListenAddress("127.0.0.1", 0), audit=sink, clock=clock,
            tracing=tracing,
        )
        running = Stack(secrets, vault, issuer, gateway, config, users, audit_stream)
        try:
            yield running
        finally:
            for client in running._clients:
                await client.close()
            await gateway.stop(grace_s=1)


def _vault_keys_to_files(data: Any, environ: Mapping[str, str], directory: Path) -> None:
    """Each profile's vault API key in `directory/<profile>.key` (0600), named by
    `vault_api_key_file` instead of its environment variable."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, profile in data["profiles"].items():
        key = environ[profile.pop("vault_api_key_env")]
        write_private(directory / f"{name}.key", f"{key}\n".encode())
        profile["vault_api_key_file"] = str(directory / f"{name}.key")


def load_vault_config_text(text: str) -> Any:
    """The vault's config from TOML text, through its real loader."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vault.toml"
        path.write_text(text)
        return load_vault_config(path, environ={})


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra
