"""`piigate explain`, as an operator runs it, against the real dev issuer's keys."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from piigate_dev import demo
from tests.support.stack import Stack, running_stack


async def explain(stack: Stack, tmp_path: Path, caller: str, token: str,
                  *extra: str) -> tuple[int, str]:
    config = tmp_path / "piigate.toml"
    config.write_text(demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                                          tmp_path / "audit.jsonl"))
    token_file = tmp_path / "subject.jwt"
    token_file.write_text(token)
    env = {**os.environ, "PIIGATE_DEMO_VAULT_KEY_FHIR": "unused-by-explain",
           "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "unused-by-explain"}
    # A subprocess the event loop waits on, so the in-process issuer keeps serving keys.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate", "explain", "--config", str(config), "--caller", caller,
        "--subject-token-file", str(token_file), *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_explain_an_allowed_call_field_by_field(tmp_path: Path) -> None:
    async with running_stack() as stack:
        token = stack.user_token("alice")
        code, out = await explain(stack, tmp_path, "support-tool", token, "--field", "ssn",
                                  "--field", "diagnosis")
    assert code == 1, out  # diagnosis is outside the profile
    assert "PASS  caller has a profile: support" in out
    assert "PASS  subject token verified (issuer dev, sub auth0|alice)" in out
    assert "PASS  audience accepted" in out
    assert "FAIL  fields within the profile: FIELD_NOT_ALLOWED" in out
    assert "ssn        masked    vault transformation ssn.mask" in out
    assert "diagnosis  withheld  not in the profile" in out
    assert "email      withheld  not requested" in out
    assert token not in out


async def test_explain_allowed_and_denied_verdicts(tmp_path: Path) -> None:
    async with running_stack() as stack:
        allowed = await explain(stack, tmp_path, "support-tool", stack.user_token("bob"))
        wrong_audience = await explain(stack, tmp_path, "support-tool",
                                       stack.users["bob"].access_token)
        stranger = await explain(stack, tmp_path, "billing-app", stack.user_token("bob"))
    assert allowed[0] == 0
    assert "verdict: would be ALLOWED" in allowed[1]
    assert "user_id  redacted  profile redacts it; not read from the vault" in allowed[1]
    assert wrong_audience[0] == 1
    assert "FAIL  audience accepted: AUDIENCE_NOT_ACCEPTED (profile=support)" in wrong_audience[1]
    assert "verdict: would be DENIED (AUDIENCE_NOT_ACCEPTED)" in wrong_audience[1]
    assert stranger[0] == 1
    assert "FAIL  caller has a profile: CALLER_WITHOUT_PROFILE" in stranger[1]
