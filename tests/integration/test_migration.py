"""Lazy migration against a stand-in vault (Piiano's two calls, its answer and error shapes)
and the real dev issuer, in-process and over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from piigate.transport.addresses import ListenAddress
from piigate.transport.http import start_http_app
from piigate.vault.binding import binding_tag, patient_tag
from piigate_dev.devissuer import migrate_cli
from piigate_dev.devissuer.migration import MigratedUser, VaultCallFailed, VaultTarget, migrate_user
from tests.support.devissuer import DevIssuerHandle, running_dev_issuer

API_KEY = "vault-key-for-tests"
SSN = "123-45-6789"
RECORD = {"name": "Jane Doe", "email": "jane@example.com", "ssn": SSN}
PII_CLAIM = "https://example.com/pii_token"


@dataclass
class StandInVault:
    """Piiano's objects POST and tokens POST, recording what it was sent."""

    base_url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # leaf -> answer
    object_ids: list[str] = field(default_factory=list)  # ids it answered, in order
    token_ids: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/pvlt/1.0/data/collections/{collection}/objects", self._objects)
        app.router.add_post("/api/pvlt/1.0/data/collections/{collection}/tokens", self._tokens)
        return app

    async def _record(self, request: web.Request, leaf: str) -> web.Response | None:
        self.calls.append(
            {
                "leaf": leaf,
                "collection": request.match_info["collection"],
                "query": dict(request.query),
                "authorization": request.headers.get("Authorization"),
                "body": await request.json(),
            }
        )
        if leaf in self.fail:
            status, body = self.fail[leaf]
            return web.json_response(body, status=status)
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return web.json_response(
                {"error_code": "PV1005", "message": "unauthorized", "context": {}}, status=401
            )
        return None

    async def _objects(self, request: web.Request) -> web.Response:
        refusal = await self._record(request, "objects")
        if refusal:
            return refusal
        self.object_ids.append(str(uuid.uuid4()))
        return web.json_response({"id": self.object_ids[-1]})

    async def _tokens(self, request: web.Request) -> web.Response:
        refusal = await self._record(request, "tokens")
        if refusal:
            return refusal
        self.token_ids.append(str(uuid.uuid4()))
        return web.json_response([{"token_id": self.token_ids[-1]}])


@asynccontextmanager
async def running_stand_in_vault() -> AsyncIterator[StandInVault]:
    vault = StandInVault()
    runner, vault.base_url = await start_http_app(vault.app(), ListenAddress("127.0.0.1", 0))
    try:
        yield vault
    finally:
        await runner.cleanup()


@pytest.fixture
async def vault() -> AsyncIterator[StandInVault]:
    async with running_stand_in_vault() as stand_in:
        yield stand_in


@pytest.fixture
async def idp() -> AsyncIterator[DevIssuerHandle]:
    async with running_dev_issuer() as handle:
        yield handle


async def claims_of(idp: DevIssuerHandle, token: str, audience: str) -> dict[str, Any]:
    keys = jwt.PyJWKSet.from_dict(await idp.jwks())
    decoded: dict[str, Any] = jwt.decode(
        token, keys.keys[0], algorithms=["RS256"], audience=audience, issuer=idp.issuer
    )
    return decoded


@pytest.mark.parametrize("issuer_form", ["in-process", "url"])
async def test_migration_makes_the_piiano_calls_and_a_bound_token(
    vault: StandInVault, idp: DevIssuerHandle, issuer_form: str
) -> None:
    target = VaultTarget(vault.base_url, API_KEY, "users")
    issuer = idp.signer if issuer_form == "in-process" else idp.base_url
    migrated = await migrate_user(
        idp.http,
        target,
        issuer,
        RECORD,
        subject="auth0|legacy-42",
        audience=["piigate", "https://examplecom.us.auth0.com/userinfo"],
        scope="openid profile",
    )

    add, tokenize = vault.calls
    assert add == {
        "leaf": "objects",
        "collection": "users",
        "query": {"reason": "AccountManagement"},
        "authorization": f"Bearer {API_KEY}",
        "body": RECORD,
    }
    assert tokenize["leaf"] == "tokens"
    assert tokenize["query"] == {"reason": "AccountManagement"}
    assert tokenize["authorization"] == f"Bearer {API_KEY}"
    assert tokenize["body"] == [
        {
            "type": "pointer",
            "object": {"id": vault.object_ids[0]},
            "tags": [binding_tag(idp.issuer, "auth0|legacy-42")],
        }
    ]

    claims = await claims_of(idp, migrated.access_token, "piigate")
    assert migrated.token_id == vault.token_ids[0]
    assert claims[PII_CLAIM] == migrated.token_id
    assert claims["sub"] == migrated.subject == "auth0|legacy-42"
    assert claims["aud"] == ["piigate", "https://examplecom.us.auth0.com/userinfo"]
    assert claims["scope"] == "openid profile"
    assert not hasattr(migrated, "record")
    assert migrated.access_token not in repr(migrated)
    assert SSN not in repr(migrated)


async def test_unbound_migration_and_other_reason(
    vault: StandInVault, idp: DevIssuerHandle
) -> None:
    target = VaultTarget(vault.base_url, API_KEY, "users")
    await migrate_user(
        idp.http,
        target,
        idp.signer,
        RECORD,
        subject="u1",
        audience="piigate",
        scope="openid",
        reason="Maintenance",
        bind=False,
    )
    assert vault.calls[0]["query"] == {"reason": "Maintenance"}
    assert "tags" not in vault.calls[1]["body"][0]


@pytest.mark.parametrize("leaf", ["objects", "tokens"])
async def test_vault_error_is_surfaced_without_values(
    vault: StandInVault, idp: DevIssuerHandle, leaf: str
) -> None:
    vault.fail[leaf] = (
        400,
        {
            "error_code": "PV1012",
            "message": f"property ssn: value {SSN} does not match SSN",
            "context": {"ssn": SSN},
        },
    )
    target = VaultTarget(vault.base_url, API_KEY, "users")
    with pytest.raises(VaultCallFailed) as caught:
        await migrate_user(
            idp.http, target, idp.signer, RECORD, subject="u1", audience="a", scope="s"
        )
    failure = caught.value
    assert (failure.status, failure.error_code) == (400, "PV1012")
    assert failure.step == ("add object" if leaf == "objects" else "tokenize")
    everything = " ".join(
        [str(failure), repr(failure), str(failure.__cause__), str(failure.__context__)]
    )
    assert SSN not in everything
    assert "Jane" not in everything
    assert API_KEY not in everything


async def test_wrong_key_and_unreachable_vault(vault: StandInVault, idp: DevIssuerHandle) -> None:
    with pytest.raises(VaultCallFailed) as caught:
        await migrate_user(
            idp.http,
            VaultTarget(vault.base_url, "wrong", "users"),
            idp.signer,
            RECORD,
            subject="u1",
            audience="a",
            scope="s",
        )
    assert (caught.value.status, caught.value.error_code) == (401, "PV1005")
    async with running_stand_in_vault() as gone:
        url = gone.base_url
    with pytest.raises(VaultCallFailed) as caught:
        await migrate_user(
            idp.http, VaultTarget(url, API_KEY, "users"), idp.signer, RECORD,
            subject="u1", audience="a", scope="s",
        )  # fmt: skip
    assert caught.value.status is None
    assert "unreachable" in str(caught.value)


def test_vault_target_hides_the_key() -> None:
    assert API_KEY not in repr(VaultTarget("http://v", API_KEY, "users"))
    url = VaultTarget("http://v:8123", API_KEY, "a b/c").url("objects", "Other", "why")
    assert str(url) == (
        "http://v:8123/api/pvlt/1.0/data/collections/a%20b%2Fc/objects?reason=Other&adhoc_reason=why"
    )


async def test_migrate_user_cli(
    vault: StandInVault,
    idp: DevIssuerHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    record_file = tmp_path / "user.json"
    record_file.write_text(json.dumps(RECORD))
    monkeypatch.setenv("TEST_VAULT_KEY", API_KEY)
    parser = argparse.ArgumentParser()
    migrate_cli.add_arguments(parser)
    args = parser.parse_args(
        [
            *("--vault", vault.base_url, "--vault-key-env", "TEST_VAULT_KEY"),
            *("--collection", "users", "--issuer", idp.base_url, "--sub", "auth0|7"),
            *("--audience", "piigate", "--scope", "openid", "--record-file", str(record_file)),
        ]
    )
    assert await asyncio.to_thread(migrate_cli.run, args) == 0
    out = capsys.readouterr().out
    answer = json.loads(out)
    assert set(answer) == {"subject", "token_id", "access_token"}
    assert SSN not in out
    migrated = MigratedUser(**answer)
    claims = await claims_of(idp, migrated.access_token, "piigate")
    assert (claims["sub"], claims[PII_CLAIM]) == ("auth0|7", migrated.token_id)
    assert vault.calls[1]["body"][0]["tags"] == [binding_tag(idp.issuer, "auth0|7")]


async def test_migrate_user_cli_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    migrate_cli.add_arguments(parser)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"ssn": "' + SSN)
    base = ["--vault", "http://127.0.0.1:1", "--collection", "users", "--issuer", "http://x"]
    base += ["--sub", "s", "--audience", "a", "--scope", "s", "--record-file", str(bad_json)]
    monkeypatch.delenv("UNSET_VAULT_KEY", raising=False)
    assert migrate_cli.run(parser.parse_args([*base, "--vault-key-env", "UNSET_VAULT_KEY"])) == 2
    assert "UNSET_VAULT_KEY is unset" in capsys.readouterr().err
    monkeypatch.setenv("TEST_VAULT_KEY", API_KEY)
    assert migrate_cli.run(parser.parse_args([*base, "--vault-key-env", "TEST_VAULT_KEY"])) == 2
    err = capsys.readouterr().err
    assert "is not valid JSON" in err
    assert SSN not in err


async def test_unreachable_issuer_url_is_reported(vault: StandInVault) -> None:
    from piigate_dev.devissuer.remote import IssuerCallFailed

    async with running_stand_in_vault() as gone:
        dead_issuer = gone.base_url
    async with aiohttp.ClientSession() as http:
        with pytest.raises(IssuerCallFailed):
            await migrate_user(
                http, VaultTarget(vault.base_url, API_KEY, "users"), dead_issuer, RECORD,
                subject="u1", audience="a", scope="s",
            )  # fmt: skip
    assert vault.calls == []  # nothing is stored before the issuer is known


async def test_migrate_user_cli_tags_a_fhir_patient_too(
    vault: StandInVault,
    idp: DevIssuerHandle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--fhir-patient-id` adds the patient tag (a clinician's launch_patient profile finds
    the record by it) beside the binding tag, on the one token; `--fhir-base` names its
    namespace, else the issuer's iss."""
    record_file = tmp_path / "user.json"
    record_file.write_text(json.dumps(RECORD))
    monkeypatch.setenv("TEST_VAULT_KEY", API_KEY)
    monkeypatch.setenv("TEST_BINDING_KEY", "binding-secret")
    parser = argparse.ArgumentParser()
    migrate_cli.add_arguments(parser)
    base = [*("--vault", vault.base_url, "--vault-key-env", "TEST_VAULT_KEY"),
            *("--collection", "users", "--issuer", idp.base_url, "--sub", "auth0|7"),
            *("--audience", "piigate", "--scope", "openid", "--record-file", str(record_file)),
            *("--binding-key-env", "TEST_BINDING_KEY", "--fhir-patient-id", "pat-7")]
    assert await asyncio.to_thread(migrate_cli.run, parser.parse_args(base)) == 0
    fhir = "https://fhir.example.com/r4"
    assert await asyncio.to_thread(
        migrate_cli.run, parser.parse_args([*base, "--fhir-base", fhir])) == 0
    capsys.readouterr()
    key = b"binding-secret"
    first, second = vault.calls[1]["body"][0]["tags"], vault.calls[3]["body"][0]["tags"]
    assert first == [binding_tag(idp.issuer, "auth0|7", key), patient_tag(idp.issuer, "pat-7", key)]
    assert second == [binding_tag(idp.issuer, "auth0|7", key), patient_tag(fhir, "pat-7", key)]


@pytest.mark.parametrize(("extra", "problem"), [
    (["--fhir-patient-id", "../Patient/7"], "--fhir-patient-id: a FHIR id"),
    (["--fhir-base", "https://fhir.example.com"], "--fhir-base: only with --fhir-patient-id"),
])
def test_migrate_user_cli_refuses_a_bad_patient(
    extra: list[str], problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    migrate_cli.add_arguments(parser)
    monkeypatch.setenv("TEST_VAULT_KEY", API_KEY)
    args = ["--vault", "http://127.0.0.1:1", "--vault-key-env", "TEST_VAULT_KEY",
            "--collection", "users", "--issuer", "http://x", "--sub", "s", "--audience", "a",
            "--scope", "s", "--record-file", str(tmp_path / "never-read.json"), *extra]
    assert migrate_cli.run(parser.parse_args(args)) == 2
    assert problem in capsys.readouterr().err
