"""SIGHUP as an operator sends it: `piigate serve` (one process, and `--workers 2`, where the
supervisor passes it on) re-reads a rotated vault API key file, with polling off, and the
next call is made with the new key; the vault then accepts only that one."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tomllib
from pathlib import Path
from typing import IO

import pytest

from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from piigate_dev import demo
from tests.integration.test_secret_reload import NO_RETRIES, VAULT_KEY_NAME, rotate
from tests.support.localvault import regenerate_key
from tests.support.pki import write_private
from tests.support.stack import Stack, running_stack

SOURCE = "profiles.support.vault_api_key_file"


def write_config(stack: Stack, directory: Path) -> Path:
    text = demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                               directory / "audit.jsonl")
    data = tomllib.loads(text)
    for name, key in (("smart_on_fhir", stack.secrets.vault_fhir),
                      ("support", stack.secrets.vault_support)):
        write_private(directory / f"{name}.key", f"{key}\n".encode())
        env = f'vault_api_key_env = "{data["profiles"][name]["vault_api_key_env"]}"'
        text = text.replace(env, f'vault_api_key_file = "{name}.key"', 1)
    text = text.replace("[server]", "[server]\nreload_interval_s = 0", 1)  # SIGHUP only
    config = directory / "piigate.toml"
    config.write_text(text)
    return config


async def serve(config: Path, log: IO[bytes], *args: str
                ) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate", "serve", "--config", str(config),
        "--listen", "127.0.0.1:0", "--log-format", "text", *args,
        stdout=asyncio.subprocess.PIPE, stderr=log, env=dict(os.environ))
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    assert line.startswith("listening on 127.0.0.1:"), line
    return proc, line.split()[2]


async def outcome(target: str, token: str, subject: str) -> str:
    async with AsyncDetokenizationClient(target, lambda: token, timeout_s=5,
                                         options=[NO_RETRIES]) as client:
        try:
            await client.detokenize(subject)
        except PiigateError as exc:
            return exc.reason
    return "OK"


async def until(target: str, token: str, subject: str, wanted: str) -> None:
    for _ in range(100):  # bounded: workers fetch issuer keys after start; reloads are async
        if await outcome(target, token, subject) == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {wanted}")


@pytest.mark.parametrize("workers", [1, 2])
async def test_sighup_reloads_a_rotated_key_file(tmp_path: Path, workers: int) -> None:
    async with running_stack() as stack:
        config = write_config(stack, tmp_path)
        with (tmp_path / "stderr.log").open("wb") as log:
            proc, target = await serve(config, log, "--workers", str(workers))
            try:
                token = await stack.caller_token("support-tool")
                subject = stack.user_token("alice")
                await until(target, token, subject, "OK")
                new = secrets.token_urlsafe(24)
                regenerate_key(stack.vault, VAULT_KEY_NAME, new)
                rotate(tmp_path / "support.key", f"{new}\n".encode())
                # Separate connections land on every worker: none reloads on its own.
                for _ in range(4 * workers):
                    assert await outcome(target, token, subject) == "VAULT_MISCONFIGURED"
                proc.send_signal(signal.SIGHUP)
                await until(target, token, subject, "OK")
                for _ in range(4 * workers):
                    assert await outcome(target, token, subject) == "OK"
                assert proc.returncode is None  # SIGHUP did not stop it
            finally:
                proc.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    text = (tmp_path / "stderr.log").read_text()
    assert text.count(f"{SOURCE}: reloaded") == workers  # every worker, once
    assert new not in text
    assert stack.secrets.vault_support not in text
