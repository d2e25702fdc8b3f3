"""The example's composition root: every part on loopback, in this process, real ones.

    the local vault          the patients' records (user_id, ssn, email)
    the dev issuer           keys, JWKS, the services' client credentials
    the SMART authz server   a layer over the dev issuer (authz.py)
    the FHIR facade          GET /Patient/{id} (facade.py), two piigate callers
    piigate                  the real gateway, gRPC on 127.0.0.1

Order matters once: the facade starts listening first, because its URL is the FHIR base,
which is the SMART audience of every app token, the gateway's profile audience and the
namespace of the patient tags migration writes. Secrets are generated for the run.
"""

from __future__ import annotations

import datetime
import io
import secrets
import tempfile
import textwrap
import tomllib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from examples.smart_on_fhir import resources
from examples.smart_on_fhir.authz import (
    AuthorizationServer,
    AuthzSettings,
    DevUser,
    SmartApp,
    create_authz_app,
    smart_configuration,
)
from examples.smart_on_fhir.facade import Facade, FacadeParts, create_facade_app
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import RunningGateway, start_gateway
from piigate.config import parse_config
from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate_client import AsyncDetokenizationClient, ClientCredentials
from piigate_dev.demo import PEOPLE, sha256_hex
from piigate_dev.devissuer.api import ISSUER_KEY, create_issuer_app
from piigate_dev.devissuer.config import parse_issuer_config
from piigate_dev.devissuer.migration import VaultTarget, migrate_user
from piigate_dev.localvault.app import create_vault_app
from piigate_dev.localvault.config import load_vault_config

LOOPBACK = ListenAddress("127.0.0.1", 0)
CALLBACK = "http://127.0.0.1/callback"  # the apps' registered redirect; never visited
PATIENT_CALLER = "fhir-facade-patient"
CLINICAL_CALLER = "fhir-facade-clinical"
VAULT_KEY_ENV = "PIIGATE_EXAMPLE_VAULT_KEY"
PATIENT_PORTAL = SmartApp("patient-portal", CALLBACK, frozenset(
    {"openid", "fhirUser", "launch/patient", "patient/Patient.rs"}))
CLINICIAN_APP = SmartApp("clinician-app", CALLBACK, frozenset(
    {"openid", "fhirUser", "launch", "user/Patient.rs"}))
PRACTITIONER = DevUser("dr-grey", "auth0|dr-grey", "practitioner", "prac-grey")


@dataclass
class SmartStack:
    """The running example: where each part is, and who can log in."""

    fhir_base: str
    authz_base: str
    users: dict[str, DevUser]  # by username
    gateway: RunningGateway
    audit_stream: io.BytesIO = field(repr=False)

    def audit_events(self) -> list[dict[str, Any]]:
        """piigate's audit trail so far, one event per call."""
        import json

        return [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]


@asynccontextmanager
async def running_smart_stack() -> AsyncIterator[SmartStack]:
    """Start everything; stop it all on exit."""
    vault_key, migration_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    client_secrets = {c: secrets.token_urlsafe(24) for c in (PATIENT_CALLER, CLINICAL_CALLER)}
    async with AsyncExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="smart-")))
        vault_url = await _start(stack, await create_vault_app(
            _vault_config(workdir, vault_key, migration_key)))
        issuer_app = await create_issuer_app(parse_issuer_config(
            tomllib.loads(_issuer_config(client_secrets)), workdir, {}))
        issuer_url = await _start(stack, issuer_app)
        signer = issuer_app[ISSUER_KEY]
        signer.bind_base_url(issuer_url)

        facade = Facade()
        fhir_base = await _start(stack, create_facade_app(facade))
        users = {PRACTITIONER.username: PRACTITIONER}
        async with aiohttp.ClientSession() as http:
            target = VaultTarget(vault_url, migration_key, "users")
            for person, record in PEOPLE:
                patient_id = f"pat-{person}"
                migrated = await migrate_user(
                    http, target, signer, record, subject=f"auth0|{person}",
                    audience=fhir_base, scope="openid", fhir_patient_id=patient_id,
                    fhir_base=fhir_base)
                users[person] = DevUser(person, migrated.subject, "patient", patient_id,
                                        migrated.token_id)
        authz = AuthorizationServer(AuthzSettings(fhir_base, tuple(users.values()),
                                                  (PATIENT_PORTAL, CLINICIAN_APP)), signer)
        authz_base = await _start(stack, create_authz_app(authz))

        audit_stream = io.BytesIO()
        config = parse_config(tomllib.loads(_gateway_config(signer.issuer, vault_url, fhir_base)),
                              {VAULT_KEY_ENV: vault_key}, workdir)
        gateway = await start_gateway(config, listen=LOOPBACK,
                                      audit=ChainedJsonLinesSink(audit_stream))
        stack.push_async_callback(gateway.stop, 1.0)
        target_address = f"127.0.0.1:{gateway.port}"
        token_url = issuer_url + "/oauth/token"
        callers = {
            caller: AsyncDetokenizationClient(target_address, ClientCredentials(
                token_url, caller, secret, audience="piigate"), timeout_s=5.0)
            for caller, secret in client_secrets.items()
        }
        for client in callers.values():
            stack.push_async_callback(client.close)
        facade.attach(FacadeParts(
            patient_access=callers[PATIENT_CALLER], clinical=callers[CLINICAL_CALLER],
            smart_configuration=smart_configuration(
                signer.issuer, issuer_url + "/.well-known/jwks.json", authz_base),
            capability=resources.to_json(resources.capability_statement(
                authz_base + "/authorize", authz_base + "/token",
                datetime.date.today().isoformat())),
        ))
        yield SmartStack(fhir_base, authz_base, users, gateway, audit_stream)


async def _start(stack: AsyncExitStack, app: aiohttp.web.Application) -> str:
    runner, url = await start_http_app(app, LOOPBACK)
    stack.push_async_callback(runner.cleanup)
    return url


def _vault_config(workdir: Path, piigate_key: str, migration_key: str) -> Any:
    path = workdir / "vault.toml"
    path.write_text(textwrap.dedent(f"""\
        audit = "vault-audit.jsonl"

        [[collections]]
        name = "users"
        type = "PERSONS"
        properties = [
          {{ name = "user_id", data_type_name = "STRING", is_unique = true }},
          {{ name = "ssn", data_type_name = "SSN" }},
          {{ name = "email", data_type_name = "EMAIL" }},
        ]

        [[keys]]   # the identity provider's migration Action: stores and tokenizes
        name = "migration"
        secret_sha256 = "{sha256_hex(migration_key)}"
        [[keys.policies]]
        operations = ["write", "tokenize"]
        collections = ["users"]
        properties = ["*"]
        reasons = ["AccountManagement"]

        [[keys]]   # piigate's key for both FHIR profiles: the user id, nothing else
        name = "piigate-fhir"
        secret_sha256 = "{sha256_hex(piigate_key)}"
        [[keys.policies]]
        operations = ["detokenize"]
        collections = ["users"]
        properties = ["user_id"]
        reasons = ["AppFunctionality"]
        """))
    return load_vault_config(path, environ={})


def _issuer_config(client_secrets: Mapping[str, str]) -> str:
    return "\n".join(textwrap.dedent(f"""\
        [[clients]]
        client_id = "{client}"
        secret_sha256 = "{sha256_hex(secret)}"
        audiences = ["piigate"]
        scopes = ["openid"]
        """) for client, secret in client_secrets.items())


def _gateway_config(issuer: str, vault_url: str, fhir_base: str) -> str:
    common = textwrap.dedent(f"""\
        audiences = ["{fhir_base}"]
        reasons = ["AppFunctionality"]
        collection = "users"
        vault_api_key_env = "{VAULT_KEY_ENV}"
        fields = {{ user_id = "raw" }}
        """)
    return textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:0"
        request_timeout_ms = 3000

        [caller]
        audience = "piigate"

        [vault]
        url = "{vault_url}"
        timeout_ms = 2000

        [audit]
        sink = "stdout"

        [[issuers]]
        name = "dev"
        issuer = "{issuer}"
        jwks_uri = "{issuer.rstrip('/')}/.well-known/jwks.json"
        algorithms = ["RS256"]
        typ = "at+jwt"

        # Patient-facing apps: the patient's own token, their own vault token claim.
        [profiles.patient_access]
        callers = ["{PATIENT_CALLER}"]
        required_scopes = ["patient/Patient.rs"]
        require_launch_patient = true
        """) + common + textwrap.dedent(f"""\

        # Clinician apps: the practitioner's token; the launch patient's record, found
        # by the patient tag in the namespace of this FHIR server.
        [profiles.clinical]
        callers = ["{CLINICAL_CALLER}"]
        subject_resolution = "launch_patient"
        fhir_base = "{fhir_base}"
        required_scopes = ["user/Patient.rs"]
        """) + common
