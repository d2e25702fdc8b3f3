"""The privacy controls no vault offers, each switched on by configuration and exercised
through the real gRPC gateway, the real vault and issuer, with its audit event checked."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pytest

from piigate.cli import audit as audit_cli
from piigate_client.errors import (
    FailedPrecondition,
    PermissionDenied,
    PiigateError,
    ResourceExhausted,
    Unauthenticated,
)
from piigate_dev import demo
from tests.support.stack import running_stack

NOW = 1_900_000_000.0


class Fixed:
    """A stopped clock: token buckets do not refill while a test runs."""

    def __call__(self) -> float:
        return NOW


async def expect(call: Any, error: type[PiigateError], reason: str) -> PiigateError:
    with pytest.raises(error) as caught:
        await call
    assert caught.value.reason == reason
    return caught.value


async def test_token_bound_to_another_user_is_refused_by_the_vault() -> None:
    async with running_stack(gateway_overrides={"profiles": {"support": {
            "bind_tokens": True}}}) as stack:
        support = await stack.caller("support-tool")
        assert (await support.detokenize(stack.user_token("alice")))["ssn"].value == "***-**-1234"
        # alice's signed access token carrying bob's vault token (a tampered IdP record)
        crossed = stack.issuer.signer.sign_user_token(_request(
            sub="auth0|alice", pii_token=stack.users["bob"].token_id))
        await expect(support.detokenize(crossed), PermissionDenied, "TOKEN_BINDING_MISMATCH")
        event = stack.audit_events()[-1]
        assert (event["event"], event["outcome"], event["subject_sub"]) == (
            "binding_failure", "denied", "auth0|alice")


async def test_keyed_binding_tags_need_the_same_key_on_both_sides() -> None:
    key = "binding-key-made-for-this-test"
    bound = {"profiles": {"support": {"bind_tokens": True}}}
    async with running_stack(gateway_overrides=bound, migration_binding_key=key.encode(),
                             dev_issuer_extra={"binding_key_env": "TEST_BINDING_KEY"},
                             environ_extra={"TEST_BINDING_KEY": key}) as stack:
        support = await stack.caller("support-tool")
        assert (await support.detokenize(stack.user_token("alice")))["ssn"].value == "***-**-1234"
    # The gateway without the key computes the unkeyed tag, which the vault token lacks.
    async with running_stack(gateway_overrides=bound,
                             migration_binding_key=key.encode()) as unkeyed:
        support = await unkeyed.caller("support-tool")
        await expect(support.detokenize(unkeyed.user_token("alice")), PermissionDenied,
                     "TOKEN_BINDING_MISMATCH")


async def test_deny_listed_claim_in_a_token_is_refused_and_reported() -> None:
    async with running_stack(dev_issuer_extra={
            "denied_claims": ["ssn", "https://example.com/ssn"]}) as stack:
        support = await stack.caller("support-tool")
        leaky = stack.user_token("alice", claims={"https://example.com/ssn": "123-45-1234"})
        error = await expect(support.detokenize(leaky), PermissionDenied,
                             "TOKEN_CARRIES_DENIED_CLAIM")
        assert error.metadata["claim"] == "https://example.com/ssn"
        assert "123-45-1234" not in json.dumps(dict(error.metadata))
        event = stack.audit_events()[-1]
        assert (event["event"], event["error_reason"]) == (
            "pii_in_token", "TOKEN_CARRIES_DENIED_CLAIM")
        assert stack.gateway.metrics.value(
            "piigate_decisions_total", method="Detokenize", outcome="denied",
            reason="TOKEN_CARRIES_DENIED_CLAIM",
            profile="support") == 1
        assert stack.gateway.metrics.value(
            "piigate_denied_claims_total", issuer=stack.issuer.issuer,
            claim="https://example.com/ssn") == 1


async def test_caller_rate_limit_answers_resource_exhausted_with_retry_info() -> None:
    limits = {"limits": {"caller_per_s": 0.5, "caller_burst": 2}}
    async with running_stack(clock=Fixed(), gateway_overrides={"profiles": {
            "support": limits}}) as stack:
        support = await stack.caller("support-tool")
        for _ in range(2):
            await support.detokenize(stack.user_token("alice"))
        error = await expect(support.detokenize(stack.user_token("alice")), ResourceExhausted,
                             "RATE_LIMITED")
        assert error.metadata["limit"] == "caller"
        assert error.retry_after_s == pytest.approx(2.0)


async def test_harvesting_cap_on_distinct_subjects() -> None:
    limits = {"limits": {"distinct_subjects": 2, "distinct_window_s": 3600}}
    async with running_stack(clock=Fixed(), gateway_overrides={"profiles": {
            "support": limits}}) as stack:
        support = await stack.caller("support-tool")
        await support.detokenize(stack.user_token("alice"))
        await support.detokenize(stack.user_token("bob"))
        await support.detokenize(stack.user_token("alice"))  # a known subject is fine
        await expect(support.detokenize(stack.user_token("carol")), ResourceExhausted,
                     "DISTINCT_SUBJECTS_EXCEEDED")
        assert stack.audit_events()[-1]["event"] == "harvesting_suspected"


async def test_one_time_tokens_refuse_a_replay() -> None:
    async with running_stack(gateway_overrides={"profiles": {"support": {
            "one_time_tokens": True}}}) as stack:
        support = await stack.caller("support-tool")
        token = stack.user_token("alice")
        # A refused call does not burn the token: it is consumed only when data flows.
        await expect(support.detokenize(token, fields=["diagnosis"]), PermissionDenied,
                     "FIELD_NOT_ALLOWED")
        await support.detokenize(token)
        await expect(support.detokenize(token), Unauthenticated, "TOKEN_REPLAYED")


async def test_step_up_falls_back_to_masked_and_the_audit_says_why() -> None:
    profile = {"fields": {"ssn": "raw", "email": "mask"},
               "reasons": ["AccountManagement"],
               "step_up": {"ssn": {"acr": ["phr"], "max_auth_age_s": 300, "otherwise": "mask"}}}
    async with running_stack(gateway_overrides={"profiles": {"support": profile}}) as stack:
        support = await stack.caller("support-tool")
        result = await support.detokenize(stack.user_token("alice"))
        assert (result["ssn"].value, result["ssn"].disclosure) == ("***-**-1234", "masked")
        event = stack.audit_events()[-1]
        assert event["fields"][0] == {"name": "ssn", "disclosure": "masked",
                                      "note": "step_up_unmet:acr"}
        # Met: piigate asks for raw, and the vault's own policy for this key still says no.
        stepped = stack.user_token("alice", claims={"acr": "phr",
                                                    "auth_time": int(time.time())})
        await expect(support.detokenize(stepped), PermissionDenied, "VAULT_ACCESS_DENIED")


async def test_smart_launch_context_is_required() -> None:
    profile = {"require_launch_patient": True}
    async with running_stack(gateway_overrides={"profiles": {"smart_on_fhir": profile}}) as stack:
        fhir = await stack.caller("fhir-app")
        scope = "openid launch/patient patient/*.rs"
        with_patient = stack.user_token("alice", audience=demo.FHIR_AUDIENCE, scope=scope,
                                        claims={"patient": "Patient/123"})
        assert (await fhir.detokenize(with_patient))["user_id"].value == "u-7f3a91"
        without = stack.user_token("alice", audience=demo.FHIR_AUDIENCE, scope=scope)
        await expect(fhir.detokenize(without), PermissionDenied, "LAUNCH_CONTEXT_MISSING")
        user_scope = stack.user_token("alice", audience=demo.FHIR_AUDIENCE,
                                      scope="openid user/Patient.rs",
                                      claims={"patient": "Patient/123"})
        await expect(fhir.detokenize(user_scope), PermissionDenied, "SCOPE_MISSING")


async def test_audit_trail_is_hash_chained_and_verifiable(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    trail = tmp_path / "audit.jsonl"
    async with running_stack(audit_file=trail) as stack:
        support = await stack.caller("support-tool")
        await support.detokenize(stack.user_token("alice"))
        with pytest.raises(FailedPrecondition):
            await support.detokenize(stack.issuer.signer.sign_user_token(_request(
                sub="auth0|nobody", pii_token=None)))
    args = argparse.Namespace(audit_command="verify", file=trail, expect_last=None)
    assert audit_cli.run(args) == 0
    assert "ok: 2 events" in capsys.readouterr().out
    lines = trail.read_text().splitlines()
    lines[0] = lines[0].replace('"outcome":"allowed"', '"outcome":"denied"')
    trail.write_text("\n".join(lines) + "\n")
    assert audit_cli.run(args) == 1
    assert "broken at line" in capsys.readouterr().out


def _request(**fields: Any) -> Any:
    from piigate_dev.devissuer.claims import UserTokenRequest

    fields.setdefault("audience", demo.SUPPORT_AUDIENCE)
    fields.setdefault("scope", "openid")
    return UserTokenRequest(**fields)
