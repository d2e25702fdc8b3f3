"""`piigate-support` end to end: the real script in a subprocess, against the demo stack
(real gateway, local vault, dev issuer) on loopback, as a support agent runs it.

The agent holds their own token and customers' ids; the script authenticates as the
`support-tool` service (client credentials), names the customers, and gets the masked
SSN found through each customer's binding tag, never the raw value. Batch mode is run
through a pseudo-terminal so its progress bar is drawn, and read back from it."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import json
import os
import struct
import sys
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest
from tests.support.pki import issue_cert, make_ca, server_cert
from tests.support.stack import Stack, running_stack

RUN_TIMEOUT_S = 30.0
PERMISSION = "support:verify"
CONSOLE_ID = "spiffe://example.org/ns/support/sa/console"
RAW_SSNS = [str(record["ssn"]) for _, record in demo.PEOPLE]
MASKED = {"alice": "***-**-1234", "bob": "***-**-4321", "carol": "***-**-9876"}
# The support profile as a support console uses it: the agent acts for a named customer.
ON_BEHALF_OF = {"profiles": {"support": {
    "subject_resolution": "on_behalf_of",
    "actor_issuers": ["dev"],
    "actor_permission": PERMISSION,
    "subject_issuers": ["dev"],
}}}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str  # a pipe's text, or what the pseudo-terminal showed


def agent_token(stack: Stack, *permissions: str) -> str:
    """A support agent's own access token, as the identity provider issues it after login."""
    return stack.issuer.signer.sign_user_token(UserTokenRequest(
        sub="auth0|agent-7", audience=demo.SUPPORT_AUDIENCE, scope="openid",
        claims={"permissions": list(permissions)}))


def environment(stack: Stack, **extra: str) -> dict[str, str]:
    return {
        **os.environ, "PIIGATE_TARGET": stack.target,
        "PIIGATE_TOKEN_URL": stack.issuer.base_url + "/oauth/token",
        "PIIGATE_CLIENT_ID": "support-tool",
        "PIIGATE_CLIENT_SECRET": stack.secrets.clients["support-tool"],
        "TERM": "xterm-256color", **extra,
    }


async def support(args: Sequence[str], env: Mapping[str, str], stdin: str = "",
                  pty_stderr: bool = False, pty_stdout: bool = False,
                  plaintext: bool = True) -> Run:
    """Run `python -m piigate_client.support lookup ARGS [--plaintext]`; with `pty_*`, that
    stream is a pseudo-terminal (100 columns) whose output is read as it comes."""
    master, slave = os.openpty() if pty_stderr or pty_stdout else (-1, -1)
    shown = bytearray()
    loop = asyncio.get_running_loop()
    if master >= 0:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))

        def drain() -> None:
            try:
                shown.extend(os.read(master, 65536))
            except OSError:  # EIO: every writer has closed the terminal
                loop.remove_reader(master)

        loop.add_reader(master, drain)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "piigate_client.support", "lookup", *args,
            *(["--plaintext"] if plaintext else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=slave if pty_stdout else asyncio.subprocess.PIPE,
            stderr=slave if pty_stderr else asyncio.subprocess.PIPE, env=dict(env))
        if slave >= 0:
            os.close(slave)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), RUN_TIMEOUT_S)
        if master >= 0:  # the child is gone: what is still buffered, then EIO
            loop.remove_reader(master)
            os.set_blocking(master, False)
            for _ in range(1000):
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO (no writer left) or EAGAIN (nothing more)
                    break
                if not chunk:
                    break
                shown.extend(chunk)
    finally:
        if master >= 0:
            loop.remove_reader(master)
            os.close(master)
    text = shown.decode("utf-8", "replace")
    return Run(proc.returncode or 0, text if pty_stdout else (out or b"").decode(),
               text if pty_stderr else (err or b"").decode())


def no_raw_value(*texts: str) -> None:
    for text in texts:
        for ssn in RAW_SSNS:
            assert ssn not in text


async def test_one_customer_as_json_lines(tmp_path: Path) -> None:
    async with running_stack(gateway_overrides=ON_BEHALF_OF) as stack:
        token_file = tmp_path / "agent.jwt"
        token_file.write_text(agent_token(stack, PERMISSION) + "\n")
        run = await support(["--issuer", "dev", "--subject", "auth0|alice", "--fields", "ssn",
                             "--ticket", "SUP-1234", "--agent-token-file", str(token_file)],
                            environment(stack))
        events = stack.audit_events()
    assert (run.code, run.stderr.strip()) == (0, "piigate-support: 1 found, 0 failed")
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["status"] == "ok"
    assert row["fields"] == {"ssn": {"value": MASKED["alice"], "disclosure": "masked"}}
    (event,) = events
    assert row["request_id"] == event["request_id"]
    assert event["outcome"] == "allowed"
    no_raw_value(run.stdout, run.stderr, json.dumps(events))


async def test_batch_from_stdin_draws_its_progress_bar_and_writes_csv() -> None:
    async with running_stack(gateway_overrides=ON_BEHALF_OF) as stack:
        env = environment(stack, PIIGATE_AGENT_TOKEN=agent_token(stack, PERMISSION))
        customers = "auth0|alice\nauth0|bob\n# a comment\nauth0|carol\nauth0|ghost\nauth0|bob\n"
        run = await support(["--issuer", "dev", "--stdin", "--fields", "ssn", "--ticket",
                             "SUP-77", "--output", "csv", "--max-batch-size", "2"], env,
                            stdin=customers, pty_stderr=True)
        calls = len({e.get("batch_id") for e in stack.audit_events()})
    assert run.code == 1  # the ghost has no record
    # The bar, on the terminal: rich's bar glyph, the count and the percentage.
    assert "━" in run.stderr
    assert "5/5" in run.stderr
    assert "100%" in run.stderr
    assert "looking up" in run.stderr
    assert "4 found, 1 failed" in run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    assert [r["subject"] for r in rows] == ["auth0|alice", "auth0|bob", "auth0|carol",
                                            "auth0|ghost", "auth0|bob"]
    assert [(r["status"], r["ssn"], r["ssn_disclosure"]) for r in rows] == [
        ("ok", MASKED["alice"], "masked"), ("ok", MASKED["bob"], "masked"),
        ("ok", MASKED["carol"], "masked"), ("failed", "", ""),
        ("ok", MASKED["bob"], "masked")]
    assert rows[3]["code"] == "NOT_FOUND"
    assert rows[3]["reason"]
    assert rows[3]["request_id"]
    assert calls == 3  # chunks of 2, 2 and 1
    no_raw_value(run.stdout, run.stderr)


async def test_csv_input_to_a_table_on_the_terminal(tmp_path: Path) -> None:
    async with running_stack(gateway_overrides=ON_BEHALF_OF) as stack:
        sheet = tmp_path / "ticket-export.csv"
        sheet.write_text("ticket,issuer,subject\nSUP-9,dev,auth0|carol\nSUP-9,dev,auth0|bob\n")
        env = environment(stack, PIIGATE_AGENT_TOKEN=agent_token(stack, PERMISSION))
        run = await support(["--csv", str(sheet), "--ticket", "SUP-9", "--fields", "ssn"],
                            env, pty_stdout=True, pty_stderr=True)
    assert run.code == 0
    assert f"{MASKED['carol']} (masked)" in run.stdout  # the default on a terminal: a table
    assert f"{MASKED['bob']} (masked)" in run.stdout
    assert "┏━" in run.stdout
    assert "request id" in run.stdout
    assert "100%" in run.stdout  # one terminal for both streams: the bar is there too
    no_raw_value(run.stdout)


async def test_refusals_exit_with_their_documented_status() -> None:
    async with running_stack(gateway_overrides=ON_BEHALF_OF) as stack:
        one = ["--issuer", "dev", "--subject", "auth0|alice", "--ticket", "SUP-1",
               "--output", "jsonl"]
        without = await support(one, environment(
            stack, PIIGATE_AGENT_TOKEN=agent_token(stack, "support:read")))
        wrong_secret = await support(one, environment(
            stack, PIIGATE_AGENT_TOKEN=agent_token(stack, PERMISSION),
            PIIGATE_CLIENT_SECRET="not-the-secret"))
        no_ticket = await support([*one[:4], "--ticket", " "], environment(
            stack, PIIGATE_AGENT_TOKEN=agent_token(stack, PERMISSION)))
        token = agent_token(stack, "support:read")
    # An agent without the permission: piigate refuses, with its reason and request id.
    assert without.code == 1  # each customer's item is refused, with the reason
    refusal = _refusal(without)
    assert refusal["reason"] == "ACTOR_PERMISSION_MISSING"
    assert refusal["request_id"]
    assert token not in without.stdout + without.stderr
    # The service's own credential refused at the token endpoint: the call cannot be made.
    assert wrong_secret.code == 3
    assert "TOKEN_ENDPOINT invalid_client" in wrong_secret.stderr
    # No ticket: a usage error, nothing sent.
    assert no_ticket.code == 2
    assert no_ticket.stdout == ""
    assert "--ticket" in no_ticket.stderr


async def test_a_console_known_by_its_certificate_alone(tmp_path: Path) -> None:
    ca = make_ca("example-org", tmp_path)
    server = server_cert(ca)
    console = issue_cert(ca, uri_sans=(CONSOLE_ID,))
    overrides = {
        "server": {"tls_cert_file": str(server.cert_file), "tls_key_file": str(server.key_file),
                   "tls_client_ca_file": str(ca.cert_file)},
        "profiles": {"console": {
            "peers": [CONSOLE_ID], **ON_BEHALF_OF["profiles"]["support"],
            "audiences": [demo.SUPPORT_AUDIENCE], "reasons": ["AccountManagement"],
            "collection": "users", "vault_api_key_env": "PIIGATE_DEMO_VAULT_KEY_SUPPORT",
            "fields": {"ssn": "mask"}}},
    }
    async with running_stack(gateway_overrides=overrides) as stack:
        env = {k: v for k, v in environment(stack).items()
               if k not in ("PIIGATE_TOKEN_URL", "PIIGATE_CLIENT_ID", "PIIGATE_CLIENT_SECRET")}
        env.update(PIIGATE_AGENT_TOKEN=agent_token(stack, PERMISSION),
                   PIIGATE_TLS_CA=str(ca.cert_file), PIIGATE_TLS_CERT=str(console.cert_file),
                   PIIGATE_TLS_KEY=str(console.key_file))
        run = await support(["--issuer", "dev", "--subject", "auth0|bob", "--ticket", "SUP-5",
                             "--output", "jsonl"], env, plaintext=False)
        (event,) = stack.audit_events()
    assert run.code == 0, run.stderr
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["fields"] == {"ssn": {"value": MASKED["bob"], "disclosure": "masked"}}
    assert (event["caller_peer"], event["profile"]) == (CONSOLE_ID, "console")


def _refusal(run: Run) -> dict[str, Any]:
    (row,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert row["status"] == "failed"
    return dict(row)
