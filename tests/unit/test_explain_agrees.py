"""`piigate explain` and the gateway decide alike: over a table of cases, the rehearsal's
verdict is the pipeline's outcome (allowed with the same fields, or the same refusal),
because both run the one decision sequence (`piigate.identity.resolution.SubjectDecider`),
whichever way the profile resolves its subject."""

from __future__ import annotations

from typing import Any

import pytest

from piigate.cli.explain import explain
from piigate.errors import GatewayError
from piigate.identity.caller import Caller
from piigate.pipeline import Call, Item, SubjectRef
from piigate.policy.decision import DisclosureRequest
from piigate.policy.shaping import Disclosure
from tests.support.pipeline_fakes import CLAIM, NOW, build, config, user_claims

STEP_UP_REFUSE = {"step_up": {"email": {"acr": ["mfa"], "otherwise": "refuse"}}}

# id: (profile overrides, subject claims overrides or None for the token "nonsense",
#      caller, fields, reason, adhoc_reason)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any] | None, str, tuple[str, ...],
                       str | None, str]] = {
    "allowed": ({}, {}, "support-tool", (), None, ""),
    "allowed, one field": ({}, {}, "support-tool", ("ssn",), None, ""),
    "step-up met": ({}, {"acr": "mfa"}, "support-tool", (), None, ""),
    "step-up falls back": ({}, {"acr": "pwd"}, "support-tool", ("email",), None, ""),
    "step-up refuses": (STEP_UP_REFUSE, {}, "support-tool", ("email",), None, ""),
    "step-up refuse, not asked": (STEP_UP_REFUSE, {}, "support-tool", ("ssn",), None, ""),
    "wrong audience": ({}, {"aud": "https://fhir.example.com"}, "support-tool", (), None, ""),
    "scope missing": ({"required_scopes": ["patient/Patient.rs"]}, {}, "support-tool", (),
                      None, ""),
    "scope granted": ({"required_scopes": ["patient/Patient.rs"]},
                      {"scope": "patient/*.read"}, "support-tool", (), None, ""),
    "launch context missing": ({"require_launch_patient": True}, {}, "support-tool", (),
                               None, ""),
    "reason not allowed": ({}, {}, "support-tool", (), "Marketing", ""),
    "reason unknown": ({}, {}, "support-tool", (), "Bogus", ""),
    "Other without purpose": ({}, {}, "support-tool", (), "Other", ""),
    "Other with purpose": ({}, {}, "support-tool", (), "Other", "ticket 4711"),
    "purpose without Other": ({}, {}, "support-tool", (), None, "ticket 4711"),
    "field outside the profile": ({}, {}, "support-tool", ("ssn", "diagnosis"), None, ""),
    "field name invalid": ({}, {}, "support-tool", ("bad name",), None, ""),
    "two refusals, first wins": ({}, {"aud": "x"}, "support-tool", ("diagnosis",), None, ""),
    "deny-listed claim": ({}, {"ssn": "123-45-6789"}, "support-tool", (), None, ""),
    "no vault token claim": ({}, {CLAIM: None}, "support-tool", (), None, ""),
    "malformed vault token claim": ({}, {CLAIM: "-\n"}, "support-tool", (), None, ""),
    "token not verified": ({}, None, "support-tool", (), None, ""),
    "caller without profile": ({}, {}, "billing-app", (), None, ""),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_explain_and_the_gateway_agree(case: str) -> None:
    profile, claims, caller, fields, reason, adhoc = CASES[case]
    cfg = config(**profile)
    subject: dict[str, Any] = {}
    if claims is not None:
        subject = {k: v for k, v in user_claims(**claims).items() if v is not None}
    parts = build(cfg, subject=subject)
    parts.callers.client_id = caller
    token = "subject" if claims is not None else "nonsense"
    request = DisclosureRequest(fields, reason, adhoc)

    try:
        ((_, outcome),) = await parts.pipeline.run(Call((), None, None, (token,), request))
    except GatewayError as exc:
        outcome = exc
    report = await explain(cfg, Caller(caller, "dev", None), token, request, NOW,
                           parts.verifier)  # type: ignore[arg-type]

    if isinstance(outcome, Disclosure):
        assert report.denied_by is None, report.render()
        shown = [(name, how) for name, how, _ in report.fields if how != "withheld"]
        assert shown == [(f.name, f.disclosure) for f in outcome.fields], report.render()
    else:
        assert report.denied_by == outcome.reason, report.render()
    assert "123-45-6789" not in report.render()


# --- the other subject resolutions ----------------------------------------------------
SUPPORT_DESK = {"subject_resolution": "on_behalf_of", "actor_issuers": ["dev"],
                "subject_issuers": ["dev"], "actor_permission": "support:verify"}
CLINICIAN = {"subject_resolution": "launch_patient", "audiences": ["https://fhir.example.com"],
             "required_scopes": ["user/Patient.rs"], "step_up": {}}


def agent_claims(**extra: Any) -> dict[str, Any]:
    claims = user_claims(sub="staff|sam", **{"permissions": ["support:verify"], **extra})
    return {k: v for k, v in claims.items() if v is not None}


def practitioner_claims(**extra: Any) -> dict[str, Any]:
    claims = user_claims(sub="practitioner|who", **{
        "aud": "https://fhir.example.com", "scope": "openid user/Patient.read",
        "patient": "pat-alice", **extra})
    return {k: v for k, v in claims.items() if v is not None}


# id: (profile, the token's claims or None for "nonsense", subject token?, named subject,
#      purpose, patient); the token is the actor's for on_behalf_of, else the subject's.
# (Whether a named subject has a record is the vault's to say, which explain never asks.)
ITEMS: dict[str, tuple[dict[str, Any], dict[str, Any] | None, bool, tuple[str, str] | None,
                       str, str]] = {
    "agent allowed": (SUPPORT_DESK, agent_claims(), False, ("dev", "auth0|alice"), "T-1", ""),
    "agent without permission": (SUPPORT_DESK, agent_claims(permissions=None), False,
                                 ("dev", "auth0|alice"), "T-1", ""),
    "agent without ticket": (SUPPORT_DESK, agent_claims(), False, ("dev", "auth0|alice"), "",
                             ""),
    "agent's login too old": ({**SUPPORT_DESK, "actor_max_auth_age_s": 60},
                              agent_claims(auth_time=NOW - 600), False,
                              ("dev", "auth0|alice"), "T-1", ""),
    "agent for another issuer's user": (SUPPORT_DESK, agent_claims(), False,
                                        ("corp", "auth0|alice"), "T-1", ""),
    "agent sends a subject token": (SUPPORT_DESK, agent_claims(), True, ("dev", "auth0|alice"),
                                    "T-1", ""),
    "agent token not verified": (SUPPORT_DESK, None, False, ("dev", "auth0|alice"), "T-1", ""),
    "agent names nobody": (SUPPORT_DESK, agent_claims(), False, None, "T-1", ""),
    "clinician allowed": (CLINICIAN, practitioner_claims(), True, None, "", ""),
    "clinician names the launch patient": (CLINICIAN, practitioner_claims(), True, None, "",
                                           "pat-alice"),
    "clinician names another patient": (CLINICIAN, practitioner_claims(), True, None, "",
                                        "pat-bob"),
    "clinician without launch context": (CLINICIAN, practitioner_claims(patient=None), True,
                                         None, "", ""),
    "clinician with patient/ scopes only": (CLINICIAN,
                                            practitioner_claims(scope="patient/Patient.rs"),
                                            True, None, "", ""),
}


@pytest.mark.parametrize("case", list(ITEMS))
async def test_explain_and_the_gateway_agree_on_every_resolution(case: str) -> None:
    profile, claims, as_subject, named, purpose, patient = ITEMS[case]
    cfg = config(**profile)
    parts = build(cfg, **({"token": claims} if claims is not None else {}))
    token = "token" if claims is not None else "nonsense"
    on_behalf = profile["subject_resolution"] == "on_behalf_of"
    ref = SubjectRef(*named) if named is not None else None
    item = Item(token if as_subject else "", ref, token if on_behalf else "")
    request = DisclosureRequest((), None, "", purpose, patient)

    call = Call((), None, None, (item.subject_token,), request,
                subjects=(ref,) if ref is not None else (), actor_token=item.actor_token)
    ((_, outcome),) = await parts.pipeline.run(call)
    report = await explain(cfg, Caller("support-tool", "dev", None), item, request, NOW,
                           parts.verifier)  # type: ignore[arg-type]

    if isinstance(outcome, Disclosure):
        assert report.denied_by is None, report.render()
        shown = [(name, how) for name, how, _ in report.fields if how != "withheld"]
        assert shown == [(f.name, f.disclosure) for f in outcome.fields], report.render()
    else:
        assert report.denied_by == outcome.reason, report.render()
