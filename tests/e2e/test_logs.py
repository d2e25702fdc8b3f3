"""Log lines from a real gateway: JSON, one refused call one line, holding the request id
the caller was given and its audit event holds; in-process and as `piigate serve`."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from piigate.telemetry import logs
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from piigate_dev import demo
from tests.support.stack import running_stack

TIMEOUT_S = 60


def parse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_refused_call_is_one_line_with_its_request_id() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handler, level = logs.handler("json", stream), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        async with running_stack() as stack:
            support = await stack.caller("support-tool")
            await support.detokenize(stack.user_token("alice"))  # allowed: not logged
            with pytest.raises(PiigateError) as refused:
                await support.detokenize(stack.user_token("bob", lifetime_s=60,
                                                          iat_offset_s=-600))
            events = stack.audit_events()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = parse(stream.getvalue())
    calls = [line for line in lines if line.get("request_id")]
    assert [line["request_id"] for line in calls] == [refused.value.request_id]
    assert refused.value.request_id == events[1]["request_id"]
    (line,) = calls
    assert {k: line[k] for k in ("level", "logger", "caller", "profile", "outcome",
                                 "error_reason")} == {
        "level": "INFO", "logger": "piigate.audit.recorder", "caller": "support-tool",
        "profile": "support", "outcome": "denied", "error_reason": "TOKEN_EXPIRED"}
    assert events[0]["request_id"] not in stream.getvalue()


async def test_piigate_serve_logs_json_lines_on_stderr(tmp_path: Path) -> None:
    async with running_stack() as stack:
        config = tmp_path / "piigate.toml"
        config.write_text(demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                                              tmp_path / "audit.jsonl"))
        env = {**os.environ, "PIIGATE_DEMO_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
               "PIIGATE_DEMO_VAULT_KEY_SUPPORT": stack.secrets.vault_support}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "piigate", "serve", "--config", str(config),
            "--listen", "127.0.0.1:0", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)).decode()
            target = line.split()[2]
            token = await stack.caller_token("support-tool")
            request_id = await refused_request_id(target, token)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    lines = parse(err.decode())  # every line is JSON, or this raises
    assert lines, "piigate serve logged nothing"
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    (refusal,) = [line for line in lines if line.get("request_id") == request_id]
    assert refusal["error_reason"] == "TOKEN_MALFORMED"
    trail = [json.loads(e) for e in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert request_id in {e.get("request_id") for e in trail}


async def refused_request_id(target: str, token: str, attempts: int = 100) -> str:
    """The request id of a refused call, once the gateway answers (it loads its issuer's
    keys after it starts listening)."""
    for _ in range(attempts):  # bounded
        async with AsyncDetokenizationClient(target, lambda: token, timeout_s=5) as client:
            try:
                await client.detokenize("not-a-jwt")
            except PiigateError as exc:
                if exc.reason == "TOKEN_MALFORMED" and exc.request_id:
                    return exc.request_id
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway never refused the call")
