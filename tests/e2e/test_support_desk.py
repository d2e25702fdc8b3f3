"""A support desk through the real gateway: the console holds its own client credential,
the support agent's access token and a customer id from the ticket, never the
customer's token (`subject_resolution = "on_behalf_of"`). The customer's record is found
by the binding tag migration wrote; the agent's permission, ticket and per-agent cap are
enforced; the audit trail and the vault's log say who acted, for whom and why."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from piigate_client import AsyncDetokenizationClient, Detokenized, SubjectRef
from piigate_client.errors import PiigateError
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_dev import demo
from piigate_dev.devissuer.claims import UserTokenRequest, extra_claims
from tests.support.stack import Stack, running_stack
from tests.support.wire_caller import WireCaller

SUPPORT_DESK: dict[str, Any] = {
    "subject_resolution": "on_behalf_of",
    "actor_issuers": ["dev"],  # in production, the workforce IdP; here the one dev issuer
    "subject_issuers": ["dev"],
    "actor_permission_claim": "permissions",
    "actor_permission": "support:verify",
    "actor_max_auth_age_s": 3600,
    "limits": {"distinct_subjects": 100, "actor_distinct_subjects": 2},
}
TICKET = "TICKET-4711"


def agent_token(stack: Stack, sub: str = "staff|sam", *permissions: str,
                auth_age_s: int = 60) -> str:
    return stack.issuer.signer.sign_user_token(UserTokenRequest(
        sub=sub, audience=demo.SUPPORT_AUDIENCE, scope="openid",
        claims=extra_claims(permissions=permissions or ("support:verify",), acr="mfa",
                            auth_time=int(time.time()) - auth_age_s)))


def lookup(agent: str, customer: str, purpose: str = TICKET, **extra: Any
           ) -> pb.DetokenizeRequest:
    return pb.DetokenizeRequest(actor_token=agent, subject=pb.SubjectRef(
        issuer="dev", subject=customer), purpose=purpose, fields=["ssn"], **extra)


async def refused(console: WireCaller, request: pb.DetokenizeRequest) -> PiigateError:
    with pytest.raises(PiigateError) as failure:
        await console.detokenize(request)
    return failure.value


async def test_an_agent_verifies_a_caller_by_the_last_four_of_their_ssn(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_stack(gateway_overrides={"profiles": {"support": SUPPORT_DESK}}) as stack:
        console = WireCaller(stack.target, await stack.caller_token("support-tool"))
        agent = agent_token(stack)
        try:
            capfd.readouterr()  # the vault's log (stderr) from set-up
            answer = await console.detokenize(lookup(agent, "auth0|alice"))
            await refused(console, lookup(agent, "auth0|nobody"))  # a logged refusal
            vault_log = capfd.readouterr().err
        finally:
            await console.close()
        events = stack.audit_events()
    ((name, value, disclosure),) = [(f.name, f.value, f.disclosure) for f in answer.fields]
    assert (name, value, disclosure) == ("ssn", "***-**-1234", pb.DISCLOSURE_MASKED)
    assert "123-45-1234" not in str(answer)  # never raw: the vault masked it
    assert answer.token_id == ""  # the console needs no handle on the customer's record
    (event,) = [e for e in events if e.get("outcome") == "allowed"]
    assert (event["caller"], event["actor_sub"], event["subject_sub"], event["purpose"]) == (
        "support-tool", "staff|sam", "auth0|alice", TICKET)
    assert event["actor_iss"] == event["subject_iss"] == stack.issuer.issuer
    assert event["token_id"] == stack.users["alice"].token_id
    assert event["request_id"] == answer.request_id
    # The vault's own log has the ticket too, next to piigate's request id.
    reads = [json.loads(line) for line in vault_log.splitlines()
             if '"operation":"detokenize"' in line]
    assert len(reads) == 2
    assert reads[0]["custom_audit"] == f"piigate request {answer.request_id} purpose {TICKET}"
    # piigate's own log lines carry neither the ticket, the agent's token nor the SSN.
    assert "SUBJECT_NOT_FOUND" in caplog.text
    for secret in (TICKET, agent, "123-45-1234", "auth0|alice"):
        assert secret not in caplog.text
    assert "123-45-1234" not in stack.audit_text()


async def test_agents_without_the_permission_a_ticket_or_headroom_are_refused() -> None:
    async with running_stack(gateway_overrides={"profiles": {"support": SUPPORT_DESK}}) as stack:
        console = WireCaller(stack.target, await stack.caller_token("support-tool"))
        sam, kim = agent_token(stack), agent_token(stack, "staff|kim")
        try:
            no_permission = await refused(console, lookup(
                agent_token(stack, "staff|lee", "support:read"), "auth0|alice"))
            no_ticket = await refused(console, lookup(sam, "auth0|alice", purpose=""))
            stale = await refused(console, lookup(
                agent_token(stack, "staff|old", auth_age_s=7200), "auth0|alice"))
            customer_token = await refused(console, lookup(
                sam, "auth0|alice", subject_token=stack.user_token("alice")))
            no_agent = await refused(console, lookup("", "auth0|alice"))
            # A customer nobody migrated (it counts toward Ann's cap: probing is reach).
            unknown = await refused(console, lookup(agent_token(stack, "staff|ann"),
                                                    "auth0|nobody"))
            # Sam's cap is two customers: the third is refused, Kim still has hers.
            for customer in ("auth0|alice", "auth0|bob"):
                await console.detokenize(lookup(sam, customer))
            capped = await refused(console, lookup(sam, "auth0|carol"))
            again = await console.detokenize(lookup(sam, "auth0|alice"))  # not a new one
            colleague = await console.detokenize(lookup(kim, "auth0|carol"))
        finally:
            await console.close()
        events = stack.audit_events()
    assert (no_permission.code.name, no_permission.reason) == (
        "PERMISSION_DENIED", "ACTOR_PERMISSION_MISSING")
    assert no_permission.metadata["permission"] == "support:verify"
    assert (no_ticket.code.name, no_ticket.reason) == ("INVALID_ARGUMENT", "PURPOSE_MISSING")
    assert (stale.reason, stale.metadata["unmet"]) == ("STEP_UP_REQUIRED", "auth_time")
    assert (customer_token.reason, customer_token.metadata["field"]) == (
        "SUBJECT_FORM_NOT_ACCEPTED", "subject_token")
    assert no_agent.reason == "ACTOR_TOKEN_MISSING"
    assert (unknown.code.name, unknown.reason) == ("NOT_FOUND", "SUBJECT_NOT_FOUND")
    assert (capped.code.name, capped.reason, capped.metadata["limit"]) == (
        "RESOURCE_EXHAUSTED", "DISTINCT_SUBJECTS_EXCEEDED", "actor")
    assert [f.value for f in again.fields] == ["***-**-1234"]
    assert [f.value for f in colleague.fields] == ["***-**-9876"]
    # Each call one event, with its reason; the capped one is a harvesting alert.
    reasons = [e.get("error_reason") for e in events]
    assert reasons.count("ACTOR_PERMISSION_MISSING") == reasons.count("PURPOSE_MISSING") == 1
    (alert,) = [e for e in events if e.get("event") == "harvesting_suspected"]
    assert (alert["actor_sub"], alert["subject_sub"], alert["purpose"]) == (
        "staff|sam", "auth0|carol", TICKET)


async def test_a_console_looks_up_a_queue_of_customers_in_one_batch() -> None:
    desk = {**SUPPORT_DESK, "limits": {"actor_distinct_subjects": 10}}
    async with running_stack(gateway_overrides={"profiles": {"support": desk}}) as stack:
        console = WireCaller(stack.target, await stack.caller_token("support-tool"))
        try:
            results = await console.batch(pb.BatchDetokenizeRequest(
                actor_token=agent_token(stack), purpose="QUEUE-7", fields=["ssn", "email"],
                subjects=[pb.SubjectRef(issuer="dev", subject=s)
                          for s in ("auth0|alice", "auth0|ghost", "auth0|bob")]))
            mixed = await refused_batch(console, pb.BatchDetokenizeRequest(
                actor_token=agent_token(stack), purpose="QUEUE-7",
                subject_tokens=[stack.user_token("alice")],
                subjects=[pb.SubjectRef(issuer="dev", subject="auth0|bob")]))
        finally:
            await console.close()
        events = stack.audit_events()
    first, missing, last = results
    assert isinstance(first, pb.DetokenizeResponse)
    assert isinstance(last, pb.DetokenizeResponse)
    assert [(f.name, f.value) for f in first.fields] == [
        ("ssn", "***-**-1234"), ("email", "a***@example.com")]
    assert last.fields[0].value == "***-**-4321"
    assert isinstance(missing, PiigateError)
    assert missing.reason == "SUBJECT_NOT_FOUND"
    assert mixed.reason == "REQUEST_INVALID"
    batch = [e for e in events if e.get("purpose") == "QUEUE-7" and "subject_sub" in e]
    assert [e["subject_sub"] for e in batch] == ["auth0|alice", "auth0|ghost", "auth0|bob"]
    assert len({e["batch_id"] for e in batch}) == 1


async def refused_batch(console: WireCaller, request: pb.BatchDetokenizeRequest
                        ) -> PiigateError:
    with pytest.raises(PiigateError) as failure:
        await console.batch(request)
    return failure.value


async def test_explain_rehearses_a_support_lookup(tmp_path: Path) -> None:
    """`piigate explain --actor-token-file ... --subject-issuer ... --subject ...`, as an
    operator runs it, against the real dev issuer's keys."""
    async with running_stack() as stack:
        config = tmp_path / "piigate.toml"
        text = demo.gateway_config(stack.issuer.issuer, stack.vault.base_url,
                                   tmp_path / "audit.jsonl")
        config.write_text(text.replace("[profiles.support]\n", "[profiles.support]\n" + "\n".join(
            f"{k} = {json.dumps(v)}" for k, v in SUPPORT_DESK.items() if k != "limits") + "\n"))
        agent = tmp_path / "agent.jwt"
        agent.write_text(agent_token(stack))
        env = {**os.environ, "PIIGATE_DEMO_VAULT_KEY_FHIR": "unused-by-explain",
               "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "unused-by-explain"}
        runs = []
        for purpose in (TICKET, ""):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "piigate", "explain", "--config", str(config),
                "--caller", "support-tool", "--actor-token-file", str(agent),
                "--subject-issuer", "dev", "--subject", "auth0|alice", "--purpose", purpose,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
            runs.append((proc.returncode, out.decode()))
    (allowed, allowed_out), (denied, denied_out) = runs
    assert allowed == 0, allowed_out
    assert "PASS  actor token verified (issuer dev, sub staff|sam)" in allowed_out
    assert "PASS  actor permission support:verify" in allowed_out
    assert "verdict: would be ALLOWED" in allowed_out
    assert denied == 1, denied_out
    assert "FAIL  purpose: PURPOSE_MISSING (profile=support)" in denied_out
    assert agent.read_text() not in allowed_out + denied_out


async def test_the_python_client_looks_up_customers_on_behalf_of_an_agent() -> None:
    async with running_stack(gateway_overrides={"profiles": {"support": SUPPORT_DESK}}) as stack:
        console_token = await stack.caller_token("support-tool")
        agent = agent_token(stack)
        async with AsyncDetokenizationClient(stack.target, lambda: console_token) as client:
            alice, nobody = await client.detokenize_on_behalf_of(
                agent, [SubjectRef("dev", "auth0|alice"), SubjectRef("dev", "auth0|nobody")],
                purpose=TICKET, fields=["ssn"])
            (no_ticket,) = await client.detokenize_on_behalf_of(
                agent, [SubjectRef("dev", "auth0|bob")], purpose="", fields=["ssn"])
        events = stack.audit_events()
    assert isinstance(alice, Detokenized)
    assert (alice["ssn"].value, alice["ssn"].disclosure) == ("***-**-1234", "masked")
    assert isinstance(nobody, PiigateError)
    assert nobody.reason == "SUBJECT_NOT_FOUND"
    # A batch's items are refused one by one; a missing ticket refuses the item, not the call.
    assert isinstance(no_ticket, PiigateError)
    assert no_ticket.reason == "PURPOSE_MISSING"
    (allowed,) = [e for e in events if e.get("outcome") == "allowed"]
    assert (allowed["actor_sub"], allowed["purpose"], allowed["request_id"]) == (
        "staff|sam", TICKET, alice.request_id)
