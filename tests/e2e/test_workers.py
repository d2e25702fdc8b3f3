"""`piigate serve --workers N` as an operator runs it: one port, N processes, one audit
trail per worker, clean drain on SIGTERM; and without workers the port is not shared."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from piigate.cli import audit as audit_cli
from piigate_client import AsyncDetokenizationClient
from piigate_dev import demo
from tests.support.stack import Stack, running_stack


async def start_serve(stack: Stack, tmp_path: Path, *args: str
                      ) -> tuple[asyncio.subprocess.Process, str]:
    config = tmp_path / "piigate.toml"
    config.write_text(demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                                          tmp_path / "audit.jsonl"))
    env = {**os.environ, "PIIGATE_DEMO_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
           "PIIGATE_DEMO_VAULT_KEY_SUPPORT": stack.secrets.vault_support}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate", "serve", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    return proc, line


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 60)


async def call_until_serving(target: str, token: str, subject: str, attempts: int = 100) -> str:
    for _ in range(attempts):  # bounded: workers load their issuer keys after start
        async with AsyncDetokenizationClient(target, lambda: token, timeout_s=5) as client:
            try:
                return (await client.detokenize(subject))["ssn"].value
            except Exception:
                await asyncio.sleep(0.1)
    raise AssertionError("the workers never answered")


async def test_workers_share_one_port_and_keep_their_own_audit_trails(tmp_path: Path) -> None:
    async with running_stack() as stack:
        proc, line = await start_serve(stack, tmp_path, "--workers", "2",
                                       "--listen", "127.0.0.1:0")
        try:
            assert line.startswith("listening on 127.0.0.1:"), line
            assert line.rstrip().endswith("(2 workers)")
            target = line.split()[2]
            token = await stack.caller_token("support-tool")
            # Separate channels: the kernel spreads connections, not calls.
            values = [await call_until_serving(target, token, stack.user_token("alice"))
                      for _ in range(8)]
            assert values == ["***-**-1234"] * 8
        finally:
            code = await stop(proc)
    assert code == 0
    check_trails(tmp_path, allowed=8)


def check_trails(directory: Path, allowed: int) -> None:
    """One verifiable trail per worker; together they hold every allowed call."""
    trails = sorted(directory.glob("audit.jsonl.*"))
    assert [t.name for t in trails] == ["audit.jsonl.0", "audit.jsonl.1"]
    assert sum(t.read_text().count('"outcome":"allowed"') for t in trails) == allowed
    for trail in trails:
        args = argparse.Namespace(audit_command="verify", file=trail, expect_last=None)
        assert audit_cli.run(args) == 0


async def test_a_single_gateway_does_not_share_its_port(tmp_path: Path) -> None:
    async with running_stack() as stack:
        first, line = await start_serve(stack, tmp_path, "--listen", "127.0.0.1:0")
        try:
            address = line.split()[2]
            second_dir = tmp_path / "second"
            await asyncio.to_thread(second_dir.mkdir)
            second, second_line = await start_serve(stack, second_dir,
                                                    "--listen", address)
            code = await asyncio.wait_for(second.wait(), 60)
            assert second.stderr is not None
            err = (await second.stderr.read()).decode()
        finally:
            assert await stop(first) == 0
    assert code == 2
    assert second_line == ""
    assert f"cannot listen on {address}" in err
    assert "Traceback" not in err
