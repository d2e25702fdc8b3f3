"""The canary: seed unique PII values, drive every path (allowed and every refusal) with
all logging at DEBUG, and find none of the values, nor any token or secret, in a log
line, an audit event, an error message or ErrorInfo metadata. The gateway's own log
lines (`piigate.telemetry.logs`, as `piigate serve` writes them) are each valid JSON."""

from __future__ import annotations

import io
import json
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable

import pytest

from piigate.telemetry import logs
from piigate_client.errors import PiigateError
from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest
from tests.support.stack import Stack, running_stack


def unique_person(name: str) -> tuple[str, dict[str, str]]:
    n = secrets.randbelow(10**4)
    return name, {
        "user_id": f"canary-{secrets.token_hex(8)}",
        "ssn": f"{700 + secrets.randbelow(99):03d}-{secrets.randbelow(99):02d}-{n:04d}",
        "email": f"canary.{secrets.token_hex(6)}@example.com",
    }


PEOPLE = (unique_person("alice"), unique_person("bob"), unique_person("carol"))


async def drive_every_path(stack: Stack) -> tuple[list[str], list[str]]:
    """Run allowed and refused calls; return the texts callers saw and the secrets used."""
    fhir = await stack.caller("fhir-app")
    support = await stack.caller("support-tool")
    billing = await stack.caller("billing-app")
    user = stack.user_token("alice")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: fhir.detokenize(stack.users["alice"].access_token),
        lambda: support.detokenize(user),
        lambda: billing.detokenize(user),
        lambda: support.detokenize(stack.users["alice"].access_token),
        lambda: support.detokenize(stack.user_token("bob", lifetime_s=60, iat_offset_s=-600)),
        lambda: support.detokenize(user, fields=["nope"]),
        lambda: support.detokenize(user, reason="Marketing"),
        lambda: support.detokenize(user[:-5] + "AAAAA"),
        lambda: stack.client(user).detokenize(user),
        lambda: stack.client("garbage").detokenize(user),
        lambda: support.detokenize(""),
        lambda: support.detokenize(stack.issuer.signer.sign_user_token(UserTokenRequest(
            sub="auth0|ghost", pii_token="no-such-token", audience=demo.SUPPORT_AUDIENCE))),
        lambda: support.detokenize(stack.issuer.signer.sign_user_token(UserTokenRequest(
            sub="auth0|nobody", audience=demo.SUPPORT_AUDIENCE))),
    ]
    seen: list[str] = []
    for call in calls:
        try:
            await call()
        except PiigateError as exc:
            seen += [str(exc), exc.message, *exc.metadata.keys(), *exc.metadata.values()]
    used = [user, stack.users["alice"].access_token, stack.secrets.vault_fhir,
            stack.secrets.vault_support, stack.secrets.vault_admin,
            *stack.secrets.clients.values()]
    return seen, used


async def test_no_pii_or_token_reaches_logs_audit_or_errors(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    json_lines = io.StringIO()
    handler = logs.handler("json", json_lines)
    logging.getLogger().addHandler(handler)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_vault = f"http://127.0.0.1:{sock.getsockname()[1]}"
    texts: list[str] = []
    tokens: list[str] = []
    try:
        async with running_stack(people=PEOPLE) as stack:
            seen, used = await drive_every_path(stack)
            texts += seen
            tokens += used
            texts.append(stack.audit_text())
            assert len(stack.audit_events()) == 13  # one event per call, allowed or not
        async with running_stack(people=PEOPLE, vault_url=dead_vault) as broken:
            seen, used = await drive_every_path(broken)
            texts += [*seen, broken.audit_text()]
            tokens += used
    finally:
        logging.getLogger().removeHandler(handler)
    captured = capfd.readouterr()
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert [line for line in lines if line.get("error_reason")], "no refusal was logged"
    haystack = "\n".join([*texts, caplog.text, captured.out, captured.err,
                          json_lines.getvalue()])
    assert "DEBUG" in caplog.text or caplog.records, "logging was not captured at all"
    values = [v for _, record in PEOPLE for v in record.values()]
    leaked = [v for v in values if v in haystack]
    assert leaked == [], "PII value found in logs, audit or errors"
    leaked_tokens = [t[:12] for t in tokens if t and t in haystack]
    assert leaked_tokens == [], "a token or secret found in logs, audit or errors"
    # The masked forms are what the support profile is meant to see; the check above is
    # about raw values. Sanity: the test did see disclosures happen.
    assert '"outcome":"allowed"' in haystack
    assert demo.SUPPORT_AUDIENCE  # the stack ran with the demo's profiles
