"""Subject resolution, each kind and each refusal, through the real pipeline with fakes at
its edges only (`tests.support.pipeline_fakes`): `token_claim` (the user's own token),
`on_behalf_of` (a support agent's token and a customer named by issuer + sub) and
`launch_patient` (a practitioner's SMART token and its launch patient). Every outcome
writes exactly one audit event, which says who acted, for whom, and why."""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from piigate.audit.event import AuditEvent
from piigate.config import ConfigError, GatewayConfig, parse_config
from piigate.errors import GatewayError
from piigate.pipeline import Call, SubjectRef
from piigate.policy.decision import DisclosureRequest
from piigate.policy.shaping import Disclosure
from piigate.vault import client
from piigate.vault.binding import binding_tag, patient_tag
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import CoalescingVault
from tests.support.pipeline_fakes import CLAIM, ISS, NOW, Parts, build, user_claims

STAFF_ISS = "http://127.0.0.1:9100/"
SUPPORT_AUD = "https://support.example.com"
FHIR_AUD = "https://fhir.example.com"
FHIR_BASE = "https://fhir.example.com/r4"
PURPOSE_DETAIL = {"detail": "at most 128 printable characters"}


def gateway(**profile: Any) -> GatewayConfig:
    """Two issuers (the customers' and the staff's) and one profile for `support-tool`."""
    table: dict[str, Any] = {
        "callers": ["support-tool"], "audiences": [SUPPORT_AUD], "collection": "users",
        "reasons": ["AccountManagement", "Other"], "vault_api_key_env": "VAULT_KEY",
        "fields": {"ssn": "mask", "email": "raw", "user_id": "redact"},
        **profile,
    }
    return parse_config({
        "vault": {"url": "http://127.0.0.1:8123"},
        "issuers": [
            {"name": "dev", "issuer": ISS, "jwks_uri": ISS + ".well-known/jwks.json",
             "denied_claims": ["ssn"]},
            {"name": "staff", "issuer": STAFF_ISS, "jwks_uri": STAFF_ISS + "jwks.json"},
        ],
        "profiles": {"support": table},
    }, {"VAULT_KEY": "k"}, Path("."))


SUPPORT_DESK = {
    "subject_resolution": "on_behalf_of", "actor_issuers": ["staff"],
    "subject_issuers": ["dev"], "actor_permission": "support:verify",
}
CLINICIAN = {
    "subject_resolution": "launch_patient", "audiences": [FHIR_AUD],
    "required_scopes": ["user/Patient.rs"], "reasons": ["AppFunctionality"],
    "fields": {"ssn": "mask", "user_id": "redact"},
}


def agent(sub: str = "staff|sam", **extra: Any) -> dict[str, Any]:
    return {"iss": STAFF_ISS, "sub": sub, "aud": SUPPORT_AUD, "exp": NOW + 300,
            "iat": NOW - 10, "jti": f"j-{sub}", "permissions": ["support:verify"], **extra}


def practitioner(**extra: Any) -> dict[str, Any]:
    # The holder's own pii_token claim (tok-bob) must never be what is read.
    return {"iss": ISS, "sub": "practitioner|who", "aud": FHIR_AUD, "exp": NOW + 300,
            "iat": NOW - 10, "jti": "j-who", "scope": "openid fhirUser user/Patient.rs",
            "patient": "pat-alice", "fhirUser": "Practitioner/7", CLAIM: "tok-bob", **extra}


def parts_for(cfg: GatewayConfig, **tokens: dict[str, Any]) -> Parts:
    parts = build(cfg, agent=agent(), kim=agent("staff|kim"), doctor=practitioner(),
                  **tokens)
    parts.verifier.issuer_names = {STAFF_ISS: "staff"}
    return parts


async def on_behalf(parts: Parts, *customers: str, actor: str = "agent",
                    purpose: str = "TICKET-4711", subject_token: str = "",
                    issuer: str = "dev", patient: str = "", batch: bool | None = None,
                    fields: tuple[str, ...] = ()) -> list[Any]:
    subjects = tuple(SubjectRef(issuer, c) for c in customers)
    batch = len(customers) != 1 if batch is None else batch
    tokens = () if batch and not subject_token else (subject_token,)
    call = Call((), None, None, tokens, DisclosureRequest(fields, None, "", purpose, patient),
                batch=batch, subjects=subjects, actor_token=actor)
    try:
        return [outcome for _, outcome in await parts.pipeline.run(call)]
    except GatewayError as exc:
        return [exc]


async def launched(parts: Parts, presented: str = "doctor", patient: str = "") -> Any:
    call = Call((), None, None, (presented,), DisclosureRequest((), None, "", "", patient))
    ((_, outcome),) = await parts.pipeline.run(call)
    return outcome


def only_event(parts: Parts) -> AuditEvent:
    (event,) = parts.sink.events
    return event


# --- token_claim: unchanged, and strict about forms it does not take --------------------
async def test_token_claim_reads_the_holders_own_claim() -> None:
    parts = parts_for(gateway())
    (outcome,) = await parts.run("alice")
    assert isinstance(outcome, Disclosure)
    assert outcome.token_id == "tok-alice"
    assert parts.vault.queries[0].token_ids == ("tok-alice",)
    event = only_event(parts)
    assert (event.subject_sub, event.actor_sub, event.purpose) == ("auth0|alice", None, None)


@pytest.mark.parametrize("field", ["subject", "actor_token"])
async def test_token_claim_refuses_a_named_subject_or_an_actor(field: str) -> None:
    parts = parts_for(gateway())
    named = ("auth0|bob",) if field == "subject" else ()
    call = Call((), None, None, ("alice",), DisclosureRequest((), None, ""),
                subjects=tuple(SubjectRef("dev", s) for s in named),
                actor_token="agent" if field == "actor_token" else "")
    ((_, outcome),) = await parts.pipeline.run(call)
    assert outcome.reason == "SUBJECT_FORM_NOT_ACCEPTED"
    assert outcome.metadata == {"field": field, "resolution": "token_claim"}
    assert parts.vault.queries == []
    assert only_event(parts).error_reason == "SUBJECT_FORM_NOT_ACCEPTED"


async def test_token_claim_with_a_patient_must_name_the_tokens_own() -> None:
    parts = parts_for(gateway(), smart=user_claims(patient="pat-alice"))
    assert isinstance(await launched(parts, "smart", "pat-alice"), Disclosure)
    assert (await launched(parts, "smart", "pat-bob")).reason == "LAUNCH_PATIENT_MISMATCH"


async def test_a_purpose_is_recorded_and_sent_as_the_vaults_custom_audit() -> None:
    parts = parts_for(gateway())
    call = Call((), None, None, ("alice",),
                DisclosureRequest((), None, "", "INC-42 password reset"))
    await parts.pipeline.run(call)
    assert only_event(parts).purpose == "INC-42 password reset"
    assert parts.vault.queries[0].purpose == "INC-42 password reset"


# --- on_behalf_of: support agents ------------------------------------------------------
async def test_a_support_agent_gets_the_named_customers_masked_data() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK))
    (outcome,) = await on_behalf(parts, "auth0|alice", fields=("ssn",))
    assert isinstance(outcome, Disclosure)
    assert [(f.name, f.value, f.disclosure) for f in outcome.fields] == [
        ("ssn", "***-**-1234", "masked")]
    # Found by the binding tag alone; the customer's vault token stays inside.
    (query,) = parts.vault.queries
    assert (query.token_ids, query.tags) == ((), (binding_tag(ISS, "auth0|alice"),))
    assert (query.purpose, query.props) == ("TICKET-4711", ("ssn.mask",))
    assert outcome.token_id == ""
    event = only_event(parts)
    assert (event.caller, event.actor_iss, event.actor_sub) == (
        "support-tool", STAFF_ISS, "staff|sam")
    assert (event.subject_iss, event.subject_sub, event.purpose) == (
        ISS, "auth0|alice", "TICKET-4711")
    assert (event.token_id, event.jti, event.outcome) == ("tok-alice", "j-staff|sam", "allowed")


async def test_the_agents_step_up_governs_raw_fields() -> None:
    """The profile's step-up (email raw only with acr mfa) is judged on the agent's login."""
    step_up = {"email": {"acr": ["mfa"], "otherwise": "mask"}}
    parts = parts_for(gateway(**SUPPORT_DESK, step_up=step_up), mfa=agent(acr="mfa"))
    (plain,) = await on_behalf(parts, "auth0|alice", fields=("email",))
    (strong,) = await on_behalf(parts, "auth0|alice", actor="mfa", fields=("email",))
    assert [f.disclosure for f in plain.fields] == ["masked"]
    assert [(f.value, f.disclosure) for f in strong.fields] == [("alice@example.com", "raw")]


async def test_a_batch_names_many_customers_each_read_alone_and_audited_in_order() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK))
    outcomes = await on_behalf(parts, "auth0|alice", "auth0|nobody", "auth0|bob")
    assert [o.reason if isinstance(o, GatewayError) else "OK" for o in outcomes] == [
        "OK", "SUBJECT_NOT_FOUND", "OK"]
    assert len(parts.vault.queries) == 3  # tags are intersected: one read per customer
    assert [e.subject_sub for e in parts.sink.events] == ["auth0|alice", "auth0|nobody",
                                                           "auth0|bob"]
    assert len({e.batch_id for e in parts.sink.events}) == 1


@pytest.mark.parametrize(("overrides", "call", "reason", "metadata"), [
    ({}, {"actor": ""}, "ACTOR_TOKEN_MISSING", {}),
    ({}, {"actor": "nonsense"}, "TOKEN_MALFORMED", {"token_role": "actor"}),
    ({}, {"actor": "alice"}, "ACTOR_ISSUER_NOT_ALLOWED", {"profile": "support"}),
    ({}, {"actor": "no-permission"}, "ACTOR_PERMISSION_MISSING",
     {"profile": "support", "permission": "support:verify"}),
    ({}, {"actor": "other-api"}, "AUDIENCE_NOT_ACCEPTED", {"profile": "support"}),
    ({"actor_max_auth_age_s": 300}, {"actor": "stale"}, "STEP_UP_REQUIRED",
     {"profile": "support", "unmet": "auth_time", "token_role": "actor"}),
    ({"actor_acr": ["mfa"]}, {}, "STEP_UP_REQUIRED",
     {"profile": "support", "unmet": "acr", "token_role": "actor"}),
    ({}, {"purpose": ""}, "PURPOSE_MISSING", {"profile": "support"}),
    ({}, {"purpose": "TICKET-1\ninjected line"}, "PURPOSE_INVALID", PURPOSE_DETAIL),
    ({}, {"purpose": "T" * 129}, "PURPOSE_INVALID", PURPOSE_DETAIL),
    ({}, {"purpose": "TICKET\u202e1"}, "PURPOSE_INVALID", PURPOSE_DETAIL),  # a bidi override
    ({}, {"subject_token": "alice"}, "SUBJECT_FORM_NOT_ACCEPTED",
     {"field": "subject_token", "resolution": "on_behalf_of"}),
    ({}, {"patient": "pat-alice"}, "SUBJECT_FORM_NOT_ACCEPTED",
     {"field": "patient", "resolution": "on_behalf_of"}),
    ({}, {"customers": ()}, "SUBJECT_REF_INVALID", {"detail": "missing"}),
    ({}, {"customers": ("auth0|al\nice",)}, "SUBJECT_REF_INVALID", {"detail": "subject"}),
    ({}, {"issuer": ""}, "SUBJECT_REF_INVALID", {"detail": "issuer"}),
    ({}, {"issuer": "staff"}, "SUBJECT_ISSUER_NOT_ALLOWED", {"profile": "support"}),
    ({}, {"issuer": "elsewhere"}, "SUBJECT_ISSUER_NOT_ALLOWED", {"profile": "support"}),
    ({}, {"customers": ("auth0|nobody",)}, "SUBJECT_NOT_FOUND", {}),
])
async def test_each_support_refusal_has_its_own_reason_and_one_event(
    overrides: dict[str, Any], call: dict[str, Any], reason: str, metadata: dict[str, str]
) -> None:
    parts = parts_for(
        gateway(**SUPPORT_DESK, **overrides),
        **{"no-permission": agent(permissions=["support:read"]),
           "other-api": agent(aud="https://billing.example.com"),
           "stale": agent(auth_time=NOW - 3600)})
    customers = call.pop("customers", ("auth0|alice",))
    (outcome,) = await on_behalf(parts, *customers, batch=False, **call)
    assert isinstance(outcome, GatewayError), outcome
    assert (outcome.reason, dict(outcome.metadata)) == (reason, metadata)
    event = only_event(parts)
    assert (event.error_reason, event.outcome) == (reason, type(outcome).audit_outcome)
    assert "injected" not in event.to_json()


async def test_a_refusal_records_what_was_known_by_then() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK), **{"no-permission": agent(permissions=[])})
    await on_behalf(parts, "auth0|nobody")
    await on_behalf(parts, "auth0|alice", actor="no-permission")
    missing, unpermitted = parts.sink.events
    assert (missing.error_reason, missing.actor_sub, missing.subject_sub, missing.purpose) == (
        "SUBJECT_NOT_FOUND", "staff|sam", "auth0|nobody", "TICKET-4711")
    # Refused before the customer was looked at: the event does not name them.
    assert (unpermitted.actor_sub, unpermitted.subject_sub) == ("staff|sam", None)


async def test_two_tokens_under_one_customers_tag_disclose_nothing() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK))
    tag = binding_tag(ISS, "auth0|alice")
    parts.vault.tags = {"tok-alice": (tag,), "tok-bob": (tag,)}
    (outcome,) = await on_behalf(parts, "auth0|alice")
    assert (outcome.reason, dict(outcome.metadata)) == ("SUBJECT_AMBIGUOUS", {"tokens": "2"})
    event = only_event(parts)
    assert (event.event, event.outcome, event.token_id) == ("binding_failure", "failed", None)


@pytest.mark.parametrize(("claim", "value"), [
    ("permissions", ["read:api", "support:verify"]),           # Auth0 RBAC
    (["realm_access", "roles"], {"roles": ["support:verify"]}),  # Keycloak realm roles
    ("groups", ["Everyone", "support:verify"]),               # Okta groups
    ("scp", "openid support:verify"),                          # a space-separated string
    ("https://example.com/roles", ["support:verify"]),         # a namespaced claim, whole
])
async def test_the_permission_claim_follows_each_providers_shape(claim: Any,
                                                                 value: Any) -> None:
    name = claim[0] if isinstance(claim, list) else claim
    token = {k: v for k, v in agent().items() if k != "permissions"}
    token[name] = value
    parts = parts_for(gateway(**SUPPORT_DESK, actor_permission_claim=claim), shaped=token)
    (outcome,) = await on_behalf(parts, "auth0|alice", actor="shaped")
    assert isinstance(outcome, Disclosure), outcome


def test_a_dotted_claim_name_is_refused_rather_than_read_as_a_path() -> None:
    with pytest.raises(ConfigError) as error:
        gateway(**SUPPORT_DESK, actor_permission_claim="realm_access.roles")
    assert error.value.problems == [
        "profiles.support.actor_permission_claim: 'realm_access.roles' looks like a path but "
        'is one claim name: for the nested claim write ["realm_access", "roles"]; for a claim '
        'whose name holds a dot write ["realm_access.roles"]']


async def test_a_claim_named_with_a_dot_is_one_key_when_listed_so() -> None:
    token = {**agent(permissions=[]), "realm_access.roles": ["support:verify"],
             "realm_access": {"roles": []}}
    parts = parts_for(gateway(**SUPPORT_DESK, actor_permission_claim=["realm_access.roles"]),
                      dotted=token)
    (outcome,) = await on_behalf(parts, "auth0|alice", actor="dotted")
    assert isinstance(outcome, Disclosure), outcome


async def test_per_actor_harvesting_cap_binds_each_agent_beside_the_callers() -> None:
    limits = {"distinct_subjects": 3, "actor_distinct_subjects": 1}
    parts = parts_for(gateway(**SUPPORT_DESK, limits=limits))
    (first,) = await on_behalf(parts, "auth0|alice")
    (again,) = await on_behalf(parts, "auth0|alice")
    (second,) = await on_behalf(parts, "auth0|bob")
    (colleague,) = await on_behalf(parts, "auth0|bob", actor="kim")
    assert isinstance(first, Disclosure)
    assert isinstance(again, Disclosure)  # the same customer is not a new one
    assert (second.reason, dict(second.metadata)) == (
        "DISTINCT_SUBJECTS_EXCEEDED", {"profile": "support", "limit": "actor"})
    assert isinstance(colleague, Disclosure)  # another agent has a cap of its own
    assert parts.sink.events[2].event == "harvesting_suspected"


async def test_the_callers_own_cap_still_holds_across_its_agents() -> None:
    limits = {"distinct_subjects": 1, "actor_distinct_subjects": 5}
    parts = parts_for(gateway(**SUPPORT_DESK, limits=limits))
    assert isinstance((await on_behalf(parts, "auth0|alice"))[0], Disclosure)
    (refused,) = await on_behalf(parts, "auth0|bob", actor="kim")
    assert dict(refused.metadata) == {"profile": "support", "limit": "caller"}


async def test_per_actor_rate_limit() -> None:
    limits = {"actor_per_s": 0.01, "actor_burst": 1}
    parts = parts_for(gateway(**SUPPORT_DESK, limits=limits))
    assert isinstance((await on_behalf(parts, "auth0|alice"))[0], Disclosure)
    (limited,) = await on_behalf(parts, "auth0|alice")
    assert (limited.reason, limited.metadata["limit"]) == ("RATE_LIMITED", "actor")
    assert limited.retry_after_s > 0
    assert isinstance((await on_behalf(parts, "auth0|alice", actor="kim"))[0], Disclosure)


async def test_a_batch_may_not_mix_subject_tokens_and_subjects() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK))
    call = Call((), None, None, ("alice",), DisclosureRequest((), None, "", "T-1"), batch=True,
                subjects=(SubjectRef("dev", "auth0|bob"),), actor_token="agent")
    with pytest.raises(GatewayError) as refused:
        await parts.pipeline.run(call)
    assert refused.value.reason == "REQUEST_INVALID"
    assert only_event(parts).error_reason == "REQUEST_INVALID"


async def test_a_named_batch_over_the_size_limit_is_refused() -> None:
    parts = parts_for(gateway(**SUPPORT_DESK))
    (outcome,) = await on_behalf(parts, *(f"auth0|u{i}" for i in range(4)))
    assert outcome.reason == "BATCH_TOO_LARGE"


# --- launch_patient: SMART clinicians -------------------------------------------------
async def test_a_clinician_gets_the_launch_patients_data_not_the_holders() -> None:
    parts = parts_for(gateway(**CLINICIAN))
    outcome = await launched(parts)
    assert isinstance(outcome, Disclosure)
    assert [(f.name, f.value) for f in outcome.fields] == [("ssn", "***-**-1234"),
                                                           ("user_id", "")]
    (query,) = parts.vault.queries
    assert (query.token_ids, query.tags) == ((), (patient_tag(ISS, "pat-alice"),))
    event = only_event(parts)
    assert (event.actor_iss, event.actor_sub) == (ISS, "practitioner|who")
    assert (event.subject_iss, event.subject_sub, event.token_id) == (
        ISS, "pat-alice", "tok-alice")


@pytest.mark.parametrize("scope", ["user/Patient.rs", "user/Patient.read", "user/*.read",
                                   "user/Patient.cruds"])
async def test_smart_v1_and_v2_user_scopes_both_work(scope: str) -> None:
    parts = parts_for(gateway(**CLINICIAN), v=practitioner(scope=f"openid {scope}"))
    assert isinstance(await launched(parts, "v"), Disclosure)


@pytest.mark.parametrize(("claims", "patient", "reason"), [
    ({"scope": "openid patient/Patient.rs"}, "", "SCOPE_MISSING"),  # contexts never mix
    ({"patient": None}, "", "LAUNCH_CONTEXT_MISSING"),
    ({"patient": "../Patient/1"}, "", "LAUNCH_CONTEXT_MISSING"),  # not a FHIR id
    ({"patient": 42}, "", "LAUNCH_CONTEXT_MISSING"),
    ({}, "pat-bob", "LAUNCH_PATIENT_MISMATCH"),
    ({"patient": "pat-nobody"}, "", "SUBJECT_NOT_FOUND"),
    ({"aud": SUPPORT_AUD}, "", "AUDIENCE_NOT_ACCEPTED"),
])
async def test_each_clinician_refusal(claims: dict[str, Any], patient: str,
                                      reason: str) -> None:
    token = {k: v for k, v in practitioner(**claims).items() if v is not None}
    parts = parts_for(gateway(**CLINICIAN), t=token)
    outcome = await launched(parts, "t", patient)
    assert isinstance(outcome, GatewayError)
    assert outcome.reason == reason
    assert only_event(parts).error_reason == reason
    if reason != "SUBJECT_NOT_FOUND":
        assert parts.vault.queries == []


async def test_the_request_may_name_the_launch_patient_it_has() -> None:
    parts = parts_for(gateway(**CLINICIAN))
    assert isinstance(await launched(parts, "doctor", "pat-alice"), Disclosure)


async def test_fhir_base_names_the_patient_tags_namespace() -> None:
    parts = parts_for(gateway(**CLINICIAN, fhir_base=FHIR_BASE))
    parts.vault.tags = {"tok-alice": (patient_tag(FHIR_BASE, "pat-alice"),)}
    assert isinstance(await launched(parts), Disclosure)
    assert only_event(parts).subject_iss == FHIR_BASE


async def test_a_clinicians_actor_cap_counts_patients() -> None:
    parts = parts_for(gateway(**CLINICIAN, limits={"actor_distinct_subjects": 1}),
                      other=practitioner(patient="pat-bob"))
    assert isinstance(await launched(parts), Disclosure)
    refused = await launched(parts, "other")
    assert dict(refused.metadata) == {"profile": "support", "limit": "actor"}


async def test_a_clinician_profile_refuses_an_actor_token() -> None:
    parts = parts_for(gateway(**CLINICIAN))
    call = Call((), None, None, ("doctor",), DisclosureRequest((), None, ""),
                actor_token="agent")
    ((_, outcome),) = await parts.pipeline.run(call)
    assert outcome.metadata == {"field": "actor_token", "resolution": "launch_patient"}


# --- configuration ---------------------------------------------------------------------
@pytest.mark.parametrize(("profile", "problem"), [
    ({"subject_resolution": "magic"}, "profiles.support.subject_resolution: must be one of"),
    ({"subject_resolution": "on_behalf_of"}, "profiles.support.actor_issuers: on_behalf_of"),
    ({"subject_resolution": "on_behalf_of", "actor_issuers": ["staff"],
      "subject_issuers": ["dev"]}, "profiles.support.actor_permission: on_behalf_of needs"),
    ({**SUPPORT_DESK, "actor_issuers": ["nope"]},
     "profiles.support.actor_issuers: 'nope' is not a configured issuer name"),
    ({**SUPPORT_DESK, "subject_issuers": ["nope"]},
     "profiles.support.subject_issuers: 'nope' is not a configured issuer name"),
    ({**SUPPORT_DESK, "actor_permission_claim": []},
     "profiles.support.actor_permission_claim: must be a claim name"),
    ({**SUPPORT_DESK, "bind_tokens": True}, "profiles.support.bind_tokens:"),
    ({**SUPPORT_DESK, "one_time_tokens": True}, "profiles.support.one_time_tokens:"),
    ({**SUPPORT_DESK, "fhir_base": FHIR_BASE}, "profiles.support.fhir_base: only for"),
    ({"actor_permission": "x"}, "profiles.support.actor_permission: only for"),
    ({"limits": {"actor_per_s": 1.0}}, "profiles.support.limits.actor_per_s: per-actor"),
    ({"subject_resolution": "launch_patient"}, "profiles.support.required_scopes: "
     "launch_patient needs a SMART user/ or patient/ scope"),
    ({**CLINICIAN, "required_scopes": ["system/Patient.rs"]},
     "profiles.support.required_scopes: launch_patient needs"),
])
def test_config_mistakes_are_reported_by_key(profile: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        gateway(**profile)
    assert any(p.startswith(problem) for p in error.value.problems), error.value.problems


def test_on_behalf_of_requires_a_purpose_unless_told_otherwise() -> None:
    (desk,) = gateway(**SUPPORT_DESK).profiles
    (relaxed,) = gateway(**SUPPORT_DESK, purpose_required=False).profiles
    (plain,) = gateway().profiles
    assert (desk.purpose_required, relaxed.purpose_required, plain.purpose_required) == (
        True, False, False)
    assert desk.actor is not None
    assert desk.actor.permission_claim == ("permissions",)


# --- the vault stage by tag alone ------------------------------------------------------
class TagVault:
    """Answers a query by tags alone with every token carrying them; records each call."""

    def __init__(self, tagged: dict[str, tuple[str, ...]]) -> None:
        self.tagged = tagged
        self.calls: list[DetokenizeQuery] = []

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float
                         ) -> dict[str, Mapping[str, Any]]:
        self.calls.append(query)
        await asyncio.sleep(0.02)
        return {t: {"ssn.mask": f"m-{t}"} for t, tags in self.tagged.items()
                if set(query.tags) <= set(tags) and (not query.token_ids or t in query.token_ids)}


def tag_query(tag: str, *token_ids: str, purpose: str | None = "T-1") -> DetokenizeQuery:
    return DetokenizeQuery("users", token_ids, ("ssn.mask",), "AccountManagement", None, "k",
                           tags=(tag,), purpose=purpose)


async def test_tag_reads_share_a_call_only_with_the_same_tags_and_purpose() -> None:
    vault = TagVault({"t1": ("a",), "t2": ("a",), "t3": ("b",)})
    coalescer = CoalescingVault(vault, max_wait_s=5, max_inflight=1)
    answers = await asyncio.gather(
        coalescer.detokenize(tag_query("a"), 2), coalescer.detokenize(tag_query("a"), 2),
        coalescer.detokenize(tag_query("a"), 2), coalescer.detokenize(tag_query("b"), 2),
        coalescer.detokenize(tag_query("a", purpose="T-2"), 2),
        coalescer.detokenize(tag_query("a", "t1"), 2))
    # Tag-only reads see the whole answer (here two tokens: ambiguity is the reads' call).
    assert answers[:3] == [{"t1": {"ssn.mask": "m-t1"}, "t2": {"ssn.mask": "m-t2"}}] * 3
    assert answers[3] == {"t3": {"ssn.mask": "m-t3"}}
    assert answers[5] == {"t1": {"ssn.mask": "m-t1"}}  # by id and tag: its id only
    shapes = sorted((c.tags, c.purpose, c.token_ids) for c in vault.calls)
    assert shapes == [(("a",), "T-1", ()), (("a",), "T-1", ()), (("a",), "T-1", ("t1",)),
                      (("a",), "T-2", ()), (("b",), "T-1", ())]


def test_an_answer_by_tags_alone_may_name_any_token() -> None:
    body = b'[{"token_id": "t9", "fields": {"ssn.mask": "***-**-1234"}}]'
    assert client._parse_answer(body, None) == {"t9": {"ssn.mask": "***-**-1234"}}
    with pytest.raises(GatewayError) as refused:
        client._parse_answer(body, {"t1"})
    assert refused.value.reason == "VAULT_RESPONSE_INVALID"


# --- the README's caller examples are profiles the loader takes ------------------------
def test_the_readme_callers_examples_are_valid_profiles() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Callers\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```toml\n(.*?)^```", section, re.M | re.S)
    resolutions = []
    for block in blocks:
        profiles = tomllib.loads(block)["profiles"]
        environ = {v: "k" for p in profiles.values() for k, v in p.items()
                   if k.endswith("_env")}
        cfg = parse_config({
            "vault": {"url": "http://127.0.0.1:8123"},
            "issuers": [{"name": n, "issuer": f"https://{n}.example.com/",
                         "jwks_uri": f"https://{n}.example.com/jwks.json"}
                        for n in ("auth0", "workforce")],
            "profiles": profiles,
        }, environ, Path("."))
        resolutions += [p.subject_resolution for p in cfg.profiles]
    assert resolutions == ["token_claim", "on_behalf_of", "token_claim", "launch_patient"]


def test_a_patient_tag_never_equals_a_binding_tag() -> None:
    """Namespaced apart: an issuer named like a FHIR base, with a user whose `sub` is a
    Patient id, does not share a tag with that patient."""
    assert patient_tag(ISS, "pat-1") != binding_tag(ISS, "pat-1")
    assert patient_tag(ISS, "pat-1").startswith("piigate-pat-")
    assert len(patient_tag(ISS, "pat-1")) == len("piigate-pat-") + 32
    assert patient_tag(ISS, "pat-1", b"k") != patient_tag(ISS, "pat-1")
    assert patient_tag(ISS, "pat-1") != patient_tag(FHIR_BASE, "pat-1")
