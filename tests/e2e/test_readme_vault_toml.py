"""The README's `vault.toml`, taken literally, runs the first hour's path: the local vault
starts with it as a real process, `piigate-dev migrate-user` stores a user with the
migration key it declares, and piigate reads that user back with the support key."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from piigate.audit.sink import ChainedJsonLinesSink
from piigate.bootstrap import start_gateway
from piigate.config import parse_config
from piigate.transport.addresses import ListenAddress
from piigate_client import AsyncDetokenizationClient
from piigate_dev import demo
from piigate_dev.devissuer.config import parse_issuer_config
from tests.support.devissuer import running_dev_issuer

README = Path(__file__).resolve().parents[2] / "README.md"
RECORD = {"user_id": "u-7f3a91", "ssn": "123-45-1234", "email": "alice@example.com"}
TIMEOUT_S = 60


def readme_vault_toml() -> str:
    """The fenced block that starts with `# vault.toml` in the local-vault section."""
    section = README.read_text(encoding="utf-8").split(
        "### `piigate-dev local-vault`: a Piiano-compatible vault", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"^```toml\n(# vault\.toml\n.*?)^```", section, re.M | re.S)
    assert len(blocks) == 1, "the local-vault section must hold one `# vault.toml` block"
    return str(blocks[0])


def key_with(config: Mapping[str, Any], operations: set[str]) -> dict[str, Any]:
    """The one key in the vault config whose policies allow `operations`."""
    found = [key for key in config.get("keys", [])
             if any(operations <= set(p["operations"]) for p in key["policies"])]
    assert len(found) == 1, f"README's vault.toml needs exactly one key for {sorted(operations)}"
    return dict(found[0])


def gateway_config(issuer: str, vault_url: str, support_key: Mapping[str, Any]) -> dict[str, Any]:
    policy = support_key["policies"][0]
    # The profile asks for exactly what the README's key allows: the masked forms.
    fields = {resource.split(".")[0]: "mask" for resource in policy["properties"]}
    return {
        "server": {"listen": "127.0.0.1:0"},
        "vault": {"url": vault_url},
        "issuers": [{"name": "dev", "issuer": issuer,
                     "jwks_uri": issuer + ".well-known/jwks.json", "typ": "at+jwt"}],
        "profiles": {"support": {
            "callers": ["support-tool"], "audiences": [demo.SUPPORT_AUDIENCE],
            "reasons": policy["reasons"], "collection": policy["collections"][0],
            "vault_api_key_env": support_key["secret_env"], "fields": fields,
        }},
    }


async def migrate_user(args: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    """`piigate-dev migrate-user ARGS` as a real process (without blocking the loop that
    serves the in-process dev issuer it calls)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate_dev", "migrate-user", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    assert proc.returncode == 0, f"migrate-user failed: {err.decode()}"
    answer: dict[str, Any] = json.loads(out)
    return answer


async def test_the_readme_vault_toml_migrates_a_user_and_piigate_reads_it(
    tmp_path: Path,
) -> None:
    text = readme_vault_toml()
    config = tomllib.loads(text)
    migration = key_with(config, {"write", "tokenize"})
    support = key_with(config, {"detokenize"})
    assert "detokenize" not in {op for p in migration["policies"] for op in p["operations"]}
    (tmp_path / "vault.toml").write_text(text)
    env = {
        config["data_key_env"]: base64.b64encode(secrets.token_bytes(32)).decode(),
        migration["secret_env"]: secrets.token_urlsafe(24),
        support["secret_env"]: secrets.token_urlsafe(24),
    }
    (tmp_path / "alice.json").write_text(json.dumps(RECORD))
    s = demo.Secrets.generate()
    issuer_config = parse_issuer_config(tomllib.loads(demo.issuer_config(s)), Path("."), {})

    with demo.process(["local-vault", "--listen", "127.0.0.1:0",
                       "--config", str(tmp_path / "vault.toml")], env, "local vault") as vault:
        async with running_dev_issuer(issuer_config) as idp:
            migrated = await migrate_user([
                "--vault", vault, "--vault-key-env", migration["secret_env"],
                "--collection", "users", "--issuer", idp.base_url, "--sub", "auth0|alice",
                "--audience", demo.SUPPORT_AUDIENCE, "--scope", "openid",
                "--record-file", str(tmp_path / "alice.json"),
            ], env)
            assert set(migrated) == {"subject", "token_id", "access_token"}
            assert RECORD["ssn"] not in json.dumps(migrated)

            gateway = await start_gateway(
                parse_config(gateway_config(idp.issuer, vault, support), env, tmp_path),
                listen=ListenAddress("127.0.0.1", 0), audit=ChainedJsonLinesSink(io.BytesIO()),
            )
            try:
                credential = await idp.client_token("support-tool", s.clients["support-tool"])
                async with AsyncDetokenizationClient(
                    f"127.0.0.1:{gateway.port}", lambda: credential, timeout_s=5.0
                ) as client:
                    result = await client.detokenize(migrated["access_token"])
            finally:
                await gateway.stop(grace_s=1)
    assert result.token_id == migrated["token_id"]
    assert result["ssn"].value == "***-**-1234"
    assert result["ssn"].disclosure == "masked"
    assert result["email"].disclosure == "masked"
    assert result["email"].value != RECORD["email"]
    assert (tmp_path / "vault.db").exists()  # the file the README names, beside its config
