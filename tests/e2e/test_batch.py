"""BatchDetokenize: many users in one call, one vault call underneath where they share
reason and shape, a status per item, and the batch size capped."""

from __future__ import annotations

from pathlib import Path

import pytest

from piigate_client import Detokenized
from piigate_client.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from piigate_dev import demo
from tests.support.stack import running_stack


def vault_detokenize_calls(stack_vault_audit: str) -> int:
    return stack_vault_audit.count('"operation":"detokenize"')


async def test_batch_answers_each_item_with_one_vault_call(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    async with running_stack() as stack:
        support = await stack.caller("support-tool")
        ghost = stack.issuer.signer.sign_user_token(_request(sub="auth0|ghost",
                                                             pii_token="no-such-token"))
        tokens = [stack.user_token("alice"), stack.user_token("bob"),
                  stack.users["carol"].access_token,  # issued for the FHIR API
                  stack.user_token("carol"), ghost, "not-a-jwt"]
        capfd.readouterr()  # the vault's audit log (stderr) from set-up
        results = await support.detokenize_many(tokens, fields=["ssn"])
        vault_log = capfd.readouterr().err
    assert [type(r).__name__ for r in results] == [
        "Detokenized", "Detokenized", "PermissionDenied", "Detokenized", "NotFound",
        "Unauthenticated"]
    ok = [r for r in results if isinstance(r, Detokenized)]
    assert [r["ssn"].value for r in ok] == ["***-**-1234", "***-**-4321", "***-**-9876"]
    assert isinstance(results[2], PermissionDenied)
    assert results[2].reason == "AUDIENCE_NOT_ACCEPTED"
    assert isinstance(results[4], NotFound)
    assert isinstance(results[5], Unauthenticated)
    assert results[5].reason == "TOKEN_MALFORMED"
    # Alice, Bob, Carol and the ghost share reason and shape: one detokenize call.
    assert vault_detokenize_calls(vault_log) == 1
    events = stack.audit_events()[-6:]
    assert len({e["batch_id"] for e in events}) == 1
    assert len({e["request_id"] for e in events}) == 6
    assert [e["outcome"] for e in events] == [
        "allowed", "allowed", "denied", "allowed", "denied", "denied"]


async def test_batch_caller_failure_and_size_limit() -> None:
    async with running_stack(gateway_overrides={"server": {"max_batch_size": 3}}) as stack:
        support = await stack.caller("support-tool")
        with pytest.raises(InvalidArgument) as caught:
            await support.detokenize_many([stack.user_token("alice")] * 4)
        assert caught.value.reason == "BATCH_TOO_LARGE"
        with pytest.raises(InvalidArgument):
            await support.detokenize_many([])
        billing = await stack.caller("billing-app")
        with pytest.raises(PermissionDenied) as denied:
            await billing.detokenize_many([stack.user_token("alice")])
        assert denied.value.reason == "CALLER_WITHOUT_PROFILE"


async def test_refused_batches_are_audited_and_only_after_authentication() -> None:
    async with running_stack(gateway_overrides={"server": {"max_batch_size": 3}}) as stack:
        support = await stack.caller("support-tool")
        before = len(stack.audit_events())
        with pytest.raises(InvalidArgument) as too_large:
            await support.detokenize_many([stack.user_token("alice")] * 4)
        with pytest.raises(InvalidArgument) as empty:
            await support.detokenize_many([])
        events = stack.audit_events()[before:]
        assert [(e["outcome"], e["error_reason"], e["caller"]) for e in events] == [
            ("denied", "BATCH_TOO_LARGE", "support-tool"),
            ("denied", "REQUEST_INVALID", "support-tool")]
        assert (too_large.value.reason, empty.value.reason) == ("BATCH_TOO_LARGE",
                                                                "REQUEST_INVALID")
        # A caller that is not authenticated learns nothing of the batch limit.
        stranger = stack.client("not-a-jwt")
        with pytest.raises(Unauthenticated) as refused:
            await stranger.detokenize_many([stack.user_token("alice")] * 4)
        assert refused.value.reason == "TOKEN_MALFORMED"
        assert "max" not in refused.value.metadata
        (event,) = stack.audit_events()[before + 2:]
        assert (event["outcome"], event["error_reason"]) == ("denied", "TOKEN_MALFORMED")


async def test_bound_items_ask_the_vault_one_by_one() -> None:
    overrides = {"profiles": {"support": {"bind_tokens": True}}}
    async with running_stack(gateway_overrides=overrides) as stack:
        support = await stack.caller("support-tool")
        crossed = stack.issuer.signer.sign_user_token(_request(
            sub="auth0|alice", pii_token=stack.users["bob"].token_id))
        results = await support.detokenize_many(
            [stack.user_token("alice"), crossed, stack.user_token("bob")])
    assert isinstance(results[0], Detokenized)
    assert isinstance(results[1], PermissionDenied)
    assert results[1].reason == "TOKEN_BINDING_MISMATCH"
    assert isinstance(results[2], Detokenized)
    assert results[2]["ssn"].value == "***-**-4321"


def _request(**fields: object) -> object:
    from piigate_dev.devissuer.claims import UserTokenRequest

    return UserTokenRequest(audience=demo.SUPPORT_AUDIENCE, scope="openid",  # type: ignore[arg-type]
                            **fields)
