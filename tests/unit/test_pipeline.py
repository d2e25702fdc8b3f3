"""The pipeline alone, with fakes at its edges (callers, verifier, vault, sink, clock) and
the real stages in between: every outcome writes exactly one audit event, whatever raised.

The composition is the gateway's own (`DetokenizationPipeline` with a `SubjectDecider`,
an `AuditRecorder` and an `AbuseGuard`); only the I/O edges and the clock are fakes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from piigate import errors, pipeline
from piigate.errors import GatewayError
from piigate.identity import resolution
from piigate.pipeline import Call
from piigate.policy.decision import DisclosureRequest
from piigate.policy.profiles import ProfileIndex
from piigate.policy.shaping import Disclosure
from piigate.vault.client import DetokenizeQuery
from tests.support.pipeline_fakes import Parts, build, config

README = Path(__file__).resolve().parents[2] / "README.md"


# --- whatever raises, one event ------------------------------------------------------
def _raise(exc: BaseException) -> Callable[..., Any]:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return boom


async def _araise(exc: BaseException) -> Any:
    raise exc


STAGES: dict[str, Callable[[Parts, pytest.MonkeyPatch, BaseException], None]] = {
    "caller": lambda p, mp, e: mp.setattr(p.callers, "identify", lambda *a: _araise(e)),
    "profile": lambda p, mp, e: mp.setattr(ProfileIndex, "select", _raise(e)),
    "subject token": lambda p, mp, e: mp.setattr(p.verifier, "verify",
                                                 lambda t, **kw: _araise(e)),
    "denied claims": lambda p, mp, e: mp.setattr(resolution, "refuse_denied_claims", _raise(e)),
    "vault token claim": lambda p, mp, e: mp.setattr(resolution, "pii_token_id", _raise(e)),
    "decision": lambda p, mp, e: mp.setattr(resolution, "plan_checks", _raise(e)),
    "abuse limits": lambda p, mp, e: mp.setattr(p.abuse, "admit", _raise(e)),
    "vault": lambda p, mp, e: setattr(p.vault, "failure", e),
    "shaping": lambda p, mp, e: mp.setattr(pipeline, "disclose", _raise(e)),
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("unexpected", [RuntimeError("123-45-6789"), RecursionError(),
                                        KeyError("tok-alice")], ids=type)
async def test_an_exception_in_any_stage_writes_one_event_and_answers_internal(
    stage: str, unexpected: BaseException, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = build()
    STAGES[stage](parts, monkeypatch, unexpected)
    (outcome,) = await parts.run("alice")
    assert type(outcome) is GatewayError  # the bare INTERNAL: no type, no text of its own
    assert outcome.reason == "INTERNAL"
    assert outcome.metadata == {}
    (event,) = parts.sink.events
    assert (event.outcome, event.error_reason) == ("failed", "INTERNAL")
    assert "123-45-6789" not in event.to_json()


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("caller", "profile")])
async def test_in_a_batch_each_item_has_its_event_whatever_raised(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = build()
    STAGES[stage](parts, monkeypatch, RuntimeError("boom"))
    outcomes = await parts.run("alice", "bob", "nobody")
    assert [o.reason for o in outcomes][:2] == ["INTERNAL", "INTERNAL"]
    assert len(parts.sink.events) == 3
    assert len({e.request_id for e in parts.sink.events}) == 3
    assert len({e.batch_id for e in parts.sink.events}) == 1


async def test_a_disclosure_is_returned_only_with_its_event() -> None:
    parts = build()
    (outcome,) = await parts.run("alice")
    assert isinstance(outcome, Disclosure)
    # email is raw only with acr=mfa: without it, it falls back to the vault's mask.
    assert [(f.name, f.value, f.disclosure) for f in outcome.fields] == [
        ("ssn", "***-**-1234", "masked"), ("email", "a****@example.com", "masked"),
        ("user_id", "", "redacted")]
    assert parts.vault.queries[0].props == ("ssn.mask", "email.mask")
    (event,) = parts.sink.events
    assert (event.outcome, event.token_id) == ("allowed", "tok-alice")
    assert [(f.name, f.disclosure, f.note) for f in event.fields] == [
        ("ssn", "masked", None), ("email", "masked", "step_up_unmet:acr"),
        ("user_id", "redacted", None)]


async def test_an_event_that_cannot_be_written_withholds_the_data() -> None:
    parts = build()
    parts.sink.failure = errors.AuditUnavailable()
    (outcome,) = await parts.run("alice")
    assert isinstance(outcome, errors.AuditUnavailable)
    assert parts.sink.events == []


# --- batch refusals are audited, after authentication ---------------------------------
@pytest.mark.parametrize(("tokens", "reason"), [((), "REQUEST_INVALID"),
                                                (("alice",) * 4, "BATCH_TOO_LARGE")])
async def test_a_refused_batch_is_audited_once(tokens: tuple[str, ...], reason: str) -> None:
    parts = build()
    (outcome,) = await parts.run(*tokens, batch=True)
    assert outcome.reason == reason
    (event,) = parts.sink.events
    assert (event.outcome, event.error_reason, event.caller) == ("denied", reason, "support-tool")
    assert event.batch_id == event.request_id
    assert parts.vault.queries == []


async def test_an_unauthenticated_caller_learns_nothing_of_the_batch_limit() -> None:
    parts = build()
    parts.callers.client_id = None
    (outcome,) = await parts.run(*("alice",) * 4, batch=True)
    assert outcome.reason == "CALLER_CREDENTIAL_MISSING"
    assert "max" not in outcome.metadata
    (event,) = parts.sink.events
    assert event.error_reason == "CALLER_CREDENTIAL_MISSING"


async def test_a_batch_shares_one_vault_call_and_writes_events_in_item_order() -> None:
    parts = build()
    outcomes = await parts.run("alice", "stranger", "bob")
    assert [type(o).__name__ for o in outcomes] == ["Disclosure", "TokenMalformed",
                                                    "Disclosure"]
    assert len(parts.vault.queries) == 1
    assert parts.vault.queries[0].token_ids == ("tok-alice", "tok-bob")
    assert [e.outcome for e in parts.sink.events] == ["allowed", "denied", "allowed"]
    assert [e.subject_sub for e in parts.sink.events] == ["auth0|alice", None, "auth0|bob"]


async def test_a_cancelled_call_still_writes_its_event() -> None:
    parts = build()
    started = asyncio.Event()

    async def hang(query: DetokenizeQuery, timeout_s: float) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(30)
        return {}

    parts.vault.detokenize = hang  # type: ignore[method-assign]
    task = asyncio.ensure_future(parts.run("alice"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    (event,) = parts.sink.events
    assert (event.outcome, event.error_reason) == ("failed", "CALL_CANCELLED")
    assert event.token_id == "tok-alice"


async def test_the_vault_budget_keeps_a_reserve_for_the_answer() -> None:
    parts = build()
    seen: list[float] = []

    async def record(query: DetokenizeQuery, timeout_s: float) -> dict[str, Any]:
        seen.append(timeout_s)
        return {}

    parts.vault.detokenize = record  # type: ignore[method-assign]
    call = Call((), None, 1.0, ("alice",), DisclosureRequest((), None, ""))
    await parts.pipeline.run(call)
    assert 0 < seen[0] <= 1.0 - pipeline.ANSWER_RESERVE_S


# --- every refusal in the README's error table: exactly one event --------------------
def readme_reasons() -> list[str]:
    """The reasons of the README's Errors table, in its order."""
    text = README.read_text()
    table = text[text.index("### Errors"):text.index("Requests whose metadata")]
    reasons: list[str] = []
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) > 3 and cells[1].strip().startswith("`"):
            reasons += re.findall(r"`([A-Z_]+)`", cells[2])
    return reasons


def error_class(reason: str) -> type[GatewayError]:
    found = [c for c in vars(errors).values()
             if isinstance(c, type) and issubclass(c, GatewayError) and c.reason == reason]
    assert len(found) == 1, reason
    return found[0]


# Where each refusal arises, for injecting it there; the rest by their family below.
_AT: dict[str, str] = {
    "SUBJECT_TOKEN_MISSING": "subject token", "TOKEN_REPLAYED": "abuse limits",
    "TOKEN_CARRIES_DENIED_CLAIM": "denied claims", "PII_TOKEN_CLAIM_MISSING": "vault token claim",
    "PII_TOKEN_CLAIM_INVALID": "vault token claim", "RATE_LIMITED": "abuse limits",
    "DISTINCT_SUBJECTS_EXCEEDED": "abuse limits", "REPLAY_GUARD_FULL": "abuse limits",
    "STATE_UNAVAILABLE": "abuse limits",
    "ISSUER_KEYS_UNAVAILABLE": "subject token", "INTERNAL": "shaping",
    "BATCH_TOO_LARGE": "-", "REQUEST_INVALID": "-", "AUDIT_UNAVAILABLE": "-",
}


def stage_of(reason: str) -> str:
    if reason in _AT:
        return _AT[reason]
    if reason.startswith("CALLER_"):
        return "profile" if reason in ("CALLER_WITHOUT_PROFILE", "CALLER_PEER_NOT_ALLOWED") \
            else "caller"
    if reason.startswith("TOKEN_"):
        return "subject token"
    if reason.startswith("VAULT_") or reason == "TOKEN_BINDING_MISMATCH":
        return "vault"
    return "decision"


def test_the_table_is_read_in_full() -> None:
    reasons = readme_reasons()
    assert len(reasons) >= 40
    assert {"BATCH_TOO_LARGE", "VAULT_TIMEOUT", "AUDIT_UNAVAILABLE", "INTERNAL"} <= set(reasons)


@pytest.mark.parametrize("reason", readme_reasons())
async def test_every_refusal_in_the_readme_writes_exactly_one_event(
    reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = error_class(reason)
    parts = build()
    stage = stage_of(reason)
    tokens: tuple[str, ...] = ("alice",)
    if reason == "BATCH_TOO_LARGE":
        tokens = ("alice",) * 4
    elif reason == "REQUEST_INVALID":
        tokens = ()
    elif reason == "AUDIT_UNAVAILABLE":
        # The one refusal with no event: the event is what could not be written.
        parts.sink.failure = errors.AuditUnavailable()
        (outcome,) = await parts.run(*tokens)
        assert isinstance(outcome, errors.AuditUnavailable)
        assert parts.sink.events == []
        return
    else:
        error = (cls(1.0) if cls is errors.RateLimited else cls())  # type: ignore[call-arg]
        STAGES[stage](parts, monkeypatch, error)
    (outcome,) = await parts.run(*tokens, batch=reason in ("BATCH_TOO_LARGE", "REQUEST_INVALID"))
    assert isinstance(outcome, cls)
    (event,) = parts.sink.events
    assert event.error_reason == reason
    assert event.outcome == cls.audit_outcome
    assert event.event == cls.audit_event


async def test_permission_comes_before_existence() -> None:
    """An ID token (its audience is the client app) that carries no vault token claim is
    refused at the profile's audience check, not as a missing claim."""
    from tests.support.pipeline_fakes import CLAIM, user_claims

    id_token = {k: v for k, v in user_claims(aud="spa-client-id").items() if k != CLAIM}
    parts = build(**{"id-token": id_token})
    (outcome,) = await parts.run("id-token")
    assert outcome.reason == "AUDIENCE_NOT_ACCEPTED"
    (event,) = parts.sink.events
    assert (event.error_reason, event.token_id) == ("AUDIENCE_NOT_ACCEPTED", None)


@pytest.mark.parametrize("stage", ["caller", "subject token"])
async def test_a_key_fetch_slower_than_the_deadline_is_answered_in_time(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung key fetch (the only wait in token verification) ends in the gateway's own
    ISSUER_KEYS_UNAVAILABLE, audited, before the caller's deadline."""
    parts = build()

    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(30)

    target = parts.callers if stage == "caller" else parts.verifier
    monkeypatch.setattr(target, "identify" if stage == "caller" else "verify", hang)
    call = Call((), None, 0.4, ("alice",), DisclosureRequest((), None, ""))
    try:
        ((_, outcome),) = await asyncio.wait_for(parts.pipeline.run(call), 5)
    except GatewayError as exc:
        outcome = exc
    assert outcome.reason == "ISSUER_KEYS_UNAVAILABLE"
    (event,) = parts.sink.events
    assert event.error_reason == "ISSUER_KEYS_UNAVAILABLE"


async def test_a_batch_cancelled_while_its_events_are_written_still_writes_every_event() -> None:
    """Items write in order; one whose turn has not come when the call is cancelled still
    writes its event, in its turn."""
    parts = build()
    first_write = asyncio.Event()
    release = asyncio.Event()
    write = parts.sink.write

    async def slow_first(event: Any) -> None:
        if not first_write.is_set():
            first_write.set()
            await release.wait()
        await write(event)

    parts.sink.write = slow_first  # type: ignore[method-assign]
    task = asyncio.ensure_future(parts.run("alice", "bob", "nobody"))
    await asyncio.wait_for(first_write.wait(), 5)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    for _ in range(100):  # bounded: the shielded writes finish on their own
        if len(parts.sink.events) == 3:
            break
        await asyncio.sleep(0.01)
    assert [e.subject_sub for e in parts.sink.events] == ["auth0|alice", "auth0|bob", None]


async def test_a_batch_item_that_fails_just_before_its_read_does_not_hold_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every item either reads or drops out, exactly once: one that fails while its read
    is being prepared must not leave the call's other reads waiting for it."""
    parts = build(config(bind_tokens=True))
    calls = 0
    real = resolution.binding_tag

    def flaky(*args: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(resolution, "binding_tag", flaky)
    outcomes = await asyncio.wait_for(parts.run("alice", "bob"), 5)
    assert isinstance(outcomes[0], Disclosure)
    assert isinstance(outcomes[1], GatewayError)
    assert outcomes[1].reason == "INTERNAL"
    assert [e.outcome for e in parts.sink.events] == ["allowed", "failed"]


@pytest.mark.parametrize(("remaining", "cap_s", "vault_s", "low", "high"), [
    (None, 3.0, 2.0, 1.9, 2.0),    # no deadline: the vault's own timeout
    (0.5, 3.0, 2.0, 0.3, 0.4),     # the deadline less its reserve (a quarter here)
    (10.0, 3.0, 5.0, 2.9, 3.0),    # the server-side cap
    (-1.0, 3.0, 5.0, 0.0, 0.0),    # a deadline already past: nothing, never negative
])
async def test_the_vault_call_gets_the_smallest_budget(
    remaining: float | None, cap_s: float, vault_s: float, low: float, high: float
) -> None:
    parts = build()
    parts.pipeline._limits = pipeline.Limits(cap_s, vault_s, 3)
    seen: list[float] = []

    async def record(query: DetokenizeQuery, timeout_s: float) -> dict[str, Any]:
        seen.append(timeout_s)
        return {}

    parts.vault.detokenize = record  # type: ignore[method-assign]
    await parts.pipeline.run(Call((), None, remaining, ("alice",), DisclosureRequest((), None, "")))
    assert low <= seen[0] <= high
