"""The dev issuer's commands: a real subprocess, the loopback rule, config errors, issue-token."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import jwt
import pytest

from piigate.cli.main import SUBCOMMANDS
from piigate_dev.devissuer import cli, token_cli
from tests.support.devissuer import running_dev_issuer

STARTUP_S = 20.0
SHUTDOWN_S = 10.0


def _dispatcher_ready() -> bool:
    """`python -m piigate` builds every subcommand's parser, including other teams' modules."""
    try:
        for module_name, _ in SUBCOMMANDS.values():
            importlib.import_module(module_name)
    except ImportError:
        return False
    return True


COMMANDS = [
    pytest.param(
        ["-m", "piigate_dev", "dev-issuer"],
        id="piigate-dev-issuer",
        marks=pytest.mark.skipif(
            not _dispatcher_ready(),
            reason="another piigate subcommand module is not importable yet",
        ),
    ),
    pytest.param(["-m", "piigate_dev.devissuer.cli"], id="module"),
]


@pytest.mark.parametrize("command", COMMANDS)
async def test_subprocess_serves_jwks_and_stops_on_sigterm(command: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), STARTUP_S)).decode().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.removeprefix("listening on ")
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/.well-known/jwks.json") as resp:
                assert resp.status == 200
                assert resp.headers["Cache-Control"] == "public, max-age=300"
                jwks = await resp.json()
            async with http.get(url + "/.well-known/openid-configuration") as resp:
                assert (await resp.json())["issuer"] == url + "/"
            form = {"grant_type": "client_credentials", "audience": "piigate"}
            auth = {"Authorization": aiohttp.encode_basic_auth("dev-client", "dev-secret")}
            async with http.post(url + "/oauth/token", data=form, headers=auth) as resp:
                token = (await resp.json())["access_token"]
        key = jwt.PyJWKSet.from_dict(jwks).keys[0]
        assert jwt.decode(token, key, algorithms=["RS256"], audience="piigate")["iss"] == url + "/"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), SHUTDOWN_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="piigate-dev dev-issuer")
    cli.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.0.2.10:0", "[::]:0", "example.com:0"])
def test_non_loopback_listen_is_refused(listen: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--listen", listen)) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on non-loopback address" in err
    assert "--allow-remote" in err


def test_help_explains_allow_remote() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "piigate_dev.devissuer.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=STARTUP_S,
        check=True,
    ).stdout
    assert "--allow-remote" in help_text
    assert "loopback" in help_text


def test_bad_listen_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--listen", "nonsense")) == 2
    assert "--listen" in capsys.readouterr().err


def test_config_error_exits_2_with_key_path_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "issuer.toml"
    config.write_text('algorithm = "HS256"\n[[clients]]\nclient_id = "x"\naudiences = ["*"]\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "piigate_dev.devissuer.cli",
            "--listen",
            "127.0.0.1:0",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP_S,
    )
    assert done.returncode == 2
    assert "algorithm: must be one of RS256, ES256, EdDSA" in done.stderr
    assert "clients[0]: needs exactly one of secret_sha256, secret_env, secret_file" in done.stderr
    assert "Traceback" not in done.stderr


async def test_issue_token_prints_only_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    token_cli.add_arguments(parser)
    async with running_dev_issuer() as idp:
        args = parser.parse_args(
            [
                *("--issuer", idp.base_url, "--sub", "u1", "--pii-token", "T1"),
                *("--audience", "piigate", "--audience", "other", "--scope", "openid"),
                *("--typ", "JWT", "--lifetime-s", "120"),
            ]
        )
        assert await asyncio.to_thread(token_cli.run, args) == 0
        out = capsys.readouterr().out
        token = out.strip()
        assert out == token + "\n"
        keys = jwt.PyJWKSet.from_dict(await idp.jwks())
    claims = jwt.decode(
        token, keys.keys[0], algorithms=["RS256"], audience="other", issuer=idp.issuer
    )
    assert claims["https://example.com/pii_token"] == "T1"
    assert claims["aud"] == ["piigate", "other"]
    assert (claims["scope"], claims["exp"] - claims["iat"]) == ("openid", 120)
    assert jwt.get_unverified_header(token)["typ"] == "JWT"


async def test_issue_token_reports_refusal(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    token_cli.add_arguments(parser)
    async with running_dev_issuer() as idp:
        args = parser.parse_args(["--issuer", idp.base_url, "--sub", "u1", "--lifetime-s", "0"])
        assert await asyncio.to_thread(token_cli.run, args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "status 400" in captured.err
    assert "invalid_request" in captured.err


async def test_issue_token_mints_agent_and_practitioner_claims(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A support agent's token (permissions, acr, auth_time) and a SMART practitioner's
    (user/ scopes, the launch `patient`, `fhirUser`)."""
    parser = argparse.ArgumentParser()
    token_cli.add_arguments(parser)
    async with running_dev_issuer() as idp:
        args = parser.parse_args([
            *("--issuer", idp.base_url, "--sub", "auth0|dr-who", "--audience", "fhir"),
            *("--scope", "openid fhirUser user/Patient.rs", "--patient", "pat-1"),
            *("--fhir-user", "Practitioner/7", "--permission", "support:verify"),
            *("--permission", "support:read", "--acr", "mfa", "--auth-age-s", "120"),
        ])
        assert await asyncio.to_thread(token_cli.run, args) == 0
        token = capsys.readouterr().out.strip()
        keys = jwt.PyJWKSet.from_dict(await idp.jwks())
    claims = jwt.decode(token, keys.keys[0], algorithms=["RS256"], audience="fhir",
                        issuer=idp.issuer)
    assert (claims["patient"], claims["fhirUser"]) == ("pat-1", "Practitioner/7")
    assert claims["scope"] == "openid fhirUser user/Patient.rs"
    assert claims["permissions"] == ["support:verify", "support:read"]
    assert claims["acr"] == "mfa"
    assert 100 <= claims["iat"] - claims["auth_time"] <= 140
