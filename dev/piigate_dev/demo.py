"""`make demo`: piigate end to end on the embedded defaults, then exit.

Starts the local vault, the development issuer and the gateway as real processes on free
loopback ports; migrates three sample users into the vault the way an Auth0 Action does
(the identity provider keeps only the vault token); issues their access tokens; calls the
gateway as five callers; prints what each got; shuts everything down. Exits 0 only if
every call turned out as the profiles say it must.

All keys and secrets are generated for this run and live in a temporary folder that is
removed at the end. The sample people are fictional.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from piigate.audit.verify import verify_chain
from piigate_client import ClientCredentials, DetokenizationClient, Detokenized, PiigateError
from piigate_dev.devissuer.migration import MigratedUser, VaultTarget, migrate_user

START_TIMEOUT_S = 20.0
FHIR_AUDIENCE = "https://fhir.example.com"
SUPPORT_AUDIENCE = "https://support.example.com"
PEOPLE = (
    ("alice", {"user_id": "u-7f3a91", "ssn": "123-45-1234", "email": "alice@example.com"}),
    ("bob", {"user_id": "u-22c0d4", "ssn": "987-65-4321", "email": "bob@example.org"}),
    ("carol", {"user_id": "u-9b5e17", "ssn": "555-12-9876", "email": "carol@example.net"}),
)


@dataclass(frozen=True)
class Secrets:
    """Everything secret in this run, generated fresh."""

    vault_admin: str
    vault_fhir: str
    vault_support: str
    clients: Mapping[str, str]  # client id -> client secret

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            vault_admin=secrets.token_urlsafe(24),
            vault_fhir=secrets.token_urlsafe(24),
            vault_support=secrets.token_urlsafe(24),
            clients={
                client: secrets.token_urlsafe(24)
                for client in ("fhir-app", "support-tool", "billing-app")
            },
        )


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def vault_config(s: Secrets) -> str:
    return textwrap.dedent(f"""\
        [[collections]]
        name = "users"
        type = "PERSONS"
        properties = [
          {{ name = "user_id", data_type_name = "STRING", is_unique = true }},
          {{ name = "ssn", data_type_name = "SSN" }},
          {{ name = "email", data_type_name = "EMAIL" }},
        ]

        [[keys]]   # the identity provider's Action: stores and tokenizes, never reads
        name = "migration"
        secret_sha256 = "{sha256_hex(s.vault_admin)}"
        [[keys.policies]]
        operations = ["write", "tokenize"]
        collections = ["users"]
        properties = ["*"]
        reasons = ["AccountManagement"]

        [[keys]]   # piigate's key for the SMART-on-FHIR profile: user_id only
        name = "piigate-fhir"
        secret_sha256 = "{sha256_hex(s.vault_fhir)}"
        [[keys.policies]]
        operations = ["detokenize"]
        collections = ["users"]
        properties = ["user_id"]
        reasons = ["AppFunctionality"]

        [[keys]]   # piigate's key for support tooling: masked values only
        name = "piigate-support"
        secret_sha256 = "{sha256_hex(s.vault_support)}"
        [[keys.policies]]
        operations = ["detokenize"]
        collections = ["users"]
        properties = ["ssn.mask", "email.mask"]
        reasons = ["AccountManagement"]
        """)


def issuer_config(s: Secrets) -> str:
    scopes = {
        "fhir-app": '["openid", "system/Patient.rs"]',
        "support-tool": '["openid", "support:read"]',
        "billing-app": '["openid"]',
    }
    return "\n".join(
        textwrap.dedent(f"""\
            [[clients]]
            client_id = "{client}"
            secret_sha256 = "{sha256_hex(secret)}"
            audiences = ["piigate"]
            scopes = {scopes[client]}
            """)
        for client, secret in s.clients.items()
    )


def gateway_config(issuer: str, vault_url: str, audit_path: Path) -> str:
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
        sink = "file"
        path = "{audit_path.name}"

        [[issuers]]
        name = "dev"
        issuer = "{issuer}"
        jwks_uri = "{issuer.rstrip('/')}/.well-known/jwks.json"
        algorithms = ["RS256"]
        typ = "at+jwt"

        [profiles.smart_on_fhir]
        callers = ["fhir-app"]
        audiences = ["{FHIR_AUDIENCE}"]
        required_scopes = ["patient/Patient.read"]
        reasons = ["AppFunctionality"]
        collection = "users"
        vault_api_key_env = "PIIGATE_DEMO_VAULT_KEY_FHIR"
        fields = {{ user_id = "raw" }}

        [profiles.support]
        callers = ["support-tool"]
        audiences = ["{SUPPORT_AUDIENCE}"]
        reasons = ["AccountManagement"]
        collection = "users"
        vault_api_key_env = "PIIGATE_DEMO_VAULT_KEY_SUPPORT"
        fields = {{ ssn = "mask", email = "mask", user_id = "redact" }}
        """)


@contextmanager
def process(args: list[str], env: Mapping[str, str], name: str) -> Iterator[str]:
    """Run `python -m piigate ARGS`; yield the address from its `listening on` line;
    SIGTERM it on exit and insist that it stops cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "piigate" if args[0] == "serve" else "piigate_dev", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **env},
    )
    try:
        yield _listening_address(proc, name)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            print(f"  ! {name} exited with status {code}", file=sys.stderr)


def _listening_address(proc: subprocess.Popen[str], name: str) -> str:
    found: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("listening on "):
                found.append(line.removeprefix("listening on ").strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not found:
        raise RuntimeError(f"{name} did not start within {START_TIMEOUT_S:.0f} s")
    return found[0]


def wait_until_serving(target: str) -> None:
    """Poll the gateway's standard health service until SERVING (bounded)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise RuntimeError("the gateway did not report SERVING in time")


async def migrate_people(vault_url: str, issuer_url: str, s: Secrets) -> dict[str, MigratedUser]:
    """The lazy-migration step for each sample user: their record goes into the vault and
    their access token (for the FHIR API) carries only the vault token id."""
    target = VaultTarget(vault_url, s.vault_admin, "users")
    migrated_users: dict[str, MigratedUser] = {}
    async with aiohttp.ClientSession() as http:
        for person, record in PEOPLE:
            migrated = await migrate_user(
                http, target, issuer_url, record,
                subject=f"auth0|{person}", audience=FHIR_AUDIENCE,
                scope="openid launch/patient patient/Patient.read", azp="fhir-app",
            )
            print(f"  {person:<6} → vault token {migrated.token_id}")
            migrated_users[person] = migrated
    return migrated_users


async def user_token(issuer_url: str, **body: object) -> str:
    """A user's access token from the dev issuer's simulated login."""
    async with aiohttp.ClientSession() as http, http.post(
        issuer_url.rstrip("/") + "/dev/users/token", json=body
    ) as response:
        response.raise_for_status()
        return str((await response.json())["access_token"])


def show(result: Detokenized) -> str:
    parts = []
    for f in result.fields:
        parts.append(f"{f.name} = [redacted]" if f.disclosure == "redacted"
                     else f"{f.name} = {f.value} ({f.disclosure})")
    return ", ".join(parts)


class Scenario:
    """Runs the calls and remembers whether each matched its expectation."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def expect_ok(self, title: str, call: Callable[[], Detokenized],
                  check: Callable[[Detokenized], bool]) -> None:
        print(f"\n{title}")
        try:
            result = call()
        except PiigateError as exc:
            print(f"   unexpected failure: {exc.code.name} {exc.reason}")
            self.failures.append(title)
            return
        print(f"   profile {result.profile!r}, reason {result.reason}: {show(result)}")
        if not check(result):
            self.failures.append(title)

    def expect_denied(self, title: str, call: Callable[[], Detokenized], reason: str) -> None:
        print(f"\n{title}")
        try:
            call()
        except PiigateError as exc:
            meta = ", ".join(f"{k}={v}" for k, v in sorted(exc.metadata.items()))
            print(f"   denied: {exc.code.name} {exc.reason}" + (f" ({meta})" if meta else ""))
            if exc.reason != reason:
                self.failures.append(title)
            return
        print("   unexpectedly allowed")
        self.failures.append(title)


def run_calls(
    gateway: str, issuer_url: str, s: Secrets, users: Mapping[str, MigratedUser]
) -> int:
    token_url = issuer_url.rstrip("/") + "/oauth/token"

    def caller(client_id: str) -> DetokenizationClient:
        credential = ClientCredentials(token_url, client_id, s.clients[client_id], "piigate")
        return DetokenizationClient(gateway, credential, timeout_s=3.0)

    # The same users signing in to the support application get tokens for its audience.
    alice_fhir = users["alice"].access_token
    alice_support = asyncio.run(user_token(
        issuer_url, sub="auth0|alice", pii_token=users["alice"].token_id,
        audience=SUPPORT_AUDIENCE, scope="openid", azp="support-tool",
    ))
    expired = asyncio.run(user_token(
        issuer_url, sub="auth0|bob", pii_token=users["bob"].token_id,
        audience=SUPPORT_AUDIENCE, scope="openid", lifetime_s=600, iat_offset_s=-3600,
    ))
    scenario = Scenario()
    with caller("fhir-app") as fhir, caller("support-tool") as support, \
            caller("billing-app") as billing:
        for person in ("alice", "bob", "carol"):
            record = dict(PEOPLE)[person]
            scenario.expect_ok(
                f"1. SMART-on-FHIR integration (caller fhir-app) asks for {person}",
                lambda p=person: fhir.detokenize(users[p].access_token),  # type: ignore[misc]
                lambda r, rec=record: r["user_id"].value == rec["user_id"]  # type: ignore[misc]
                and r["user_id"].disclosure == "raw",
            )
        scenario.expect_ok(
            "2. Support tooling (caller support-tool) asks for alice",
            lambda: support.detokenize(alice_support),
            lambda r: r["ssn"].value == "***-**-1234" and r["ssn"].disclosure == "masked"
            and r["user_id"].disclosure == "redacted" and r["user_id"].value == "",
        )
        scenario.expect_denied(
            "3. A caller with no profile (billing-app) asks for alice",
            lambda: billing.detokenize(alice_support), "CALLER_WITHOUT_PROFILE",
        )
        scenario.expect_denied(
            "4. Support tooling presents alice's token issued for the FHIR API",
            lambda: support.detokenize(alice_fhir), "AUDIENCE_NOT_ACCEPTED",
        )
        scenario.expect_denied(
            "5. Support tooling presents bob's expired token",
            lambda: support.detokenize(expired), "TOKEN_EXPIRED",
        )
    return len(scenario.failures)


def show_audit(path: Path) -> None:
    chain = verify_chain(path.read_bytes().splitlines())
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"\nAudit trail: {len(events)} events in {path.name} (no PII values, no tokens)")
    for e in events:
        fields = " ".join(f"{f['name']}:{f['disclosure']}" for f in e.get("fields", ()))
        print(f"  {e['outcome']:<8} caller={e.get('caller', '-'):<13} "
              f"profile={e.get('profile', '-'):<14} sub={e.get('subject_sub', '-'):<12} "
              f"{fields or e.get('error_reason', '')}")
    print(f"  hash chain: {'intact' if chain.ok else 'BROKEN'} ({chain.lines} lines, last "
          f"{chain.last_hash[:16]}…); the demo's files go when it exits: check a trail "
          f"of your own with `piigate audit verify FILE`")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`piigate-dev demo` takes no arguments."""


def run(args: argparse.Namespace) -> int:
    return main()


def main() -> int:
    s = Secrets.generate()
    with tempfile.TemporaryDirectory(prefix="piigate-demo-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        (work / "vault.toml").write_text(vault_config(s))
        (work / "issuer.toml").write_text(issuer_config(s))
        print("piigate demo: starting the embedded defaults on loopback\n")
        vault_url = stack.enter_context(process(
            ["local-vault", "--listen", "127.0.0.1:0", "--config", str(work / "vault.toml")],
            {}, "local vault"))
        print(f"  local vault  {vault_url}   (development stand-in for Piiano Vault)")
        issuer_url = stack.enter_context(process(
            ["dev-issuer", "--listen", "127.0.0.1:0", "--config", str(work / "issuer.toml")],
            {}, "dev issuer")) + "/"
        print(f"  dev issuer   {issuer_url}  (development stand-in for your identity provider)")

        print("\nLazy migration: PII into the vault, only the vault token into the IdP")
        users = asyncio.run(migrate_people(vault_url, issuer_url, s))

        audit_path = work / "audit.jsonl"
        (work / "gateway.toml").write_text(gateway_config(issuer_url, vault_url, audit_path))
        gateway = stack.enter_context(process(
            ["serve", "--config", str(work / "gateway.toml"), "--log-level", "WARNING"],
            {"PIIGATE_DEMO_VAULT_KEY_FHIR": s.vault_fhir,
             "PIIGATE_DEMO_VAULT_KEY_SUPPORT": s.vault_support}, "gateway"))
        wait_until_serving(gateway)
        print(f"\n  gateway      {gateway}   (piigate.v1.DetokenizationService, health SERVING)")

        failures = run_calls(gateway, issuer_url, s, users)
        show_audit(audit_path)
    print("\nAll five callers got exactly what their profiles allow." if not failures
          else f"\n{failures} call(s) did not turn out as expected.")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
