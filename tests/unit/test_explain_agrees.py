"""`piigate explain` and the gateway decide alike: over a table of cases, the rehearsal's
verdict is the pipeline's outcome (allowed with the same fields, or the same refusal),
because both run the one decision sequence (`piigate.pipeline.SubjectDecider`)."""

from __future__ import annotations

from typing import Any

import pytest

from piigate.cli.explain import explain
from piigate.errors import GatewayError
from piigate.identity.caller import Caller
from piigate.pipeline import Call
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
        (outcome,) = await parts.pipeline.run(Call((), None, None, (token,), request))
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
