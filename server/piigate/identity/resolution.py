"""Stages 3–5: whose data an item is about, decided as its profile's `subject_resolution`
says, ending in the vault selector that finds the person's record.

- `token_claim`: the verified `subject_token` is the user's own; the subject is its
  `iss` + `sub`; the vault token is its `pii_token` claim (with `bind_tokens`, only if
  the token carries the user's binding tag too).
- `on_behalf_of`: the verified `actor_token` is the support agent's; the subject is the
  customer the request names (issuer name + `sub`); the vault token is the one tagged
  `binding_tag(iss, sub)`.
- `launch_patient`: the verified `subject_token` is the practitioner's; the subject is
  the SMART launch `patient` (a FHIR id); the vault token is the one tagged
  `patient_tag(fhir_base, id)`.

The token verified is the one the profile's decision (stage 4: audience, scopes, reason,
purpose, fields, step-up) is judged on: for `on_behalf_of` that is the agent's token,
whose audience, scopes and `acr`/`auth_time` the profile constrains. A tag selector never
reads the holder's own claim: a practitioner's `pii_token`, if any, is never used.

Each item is decided on its own, so single and batch calls share every line, and
`piigate explain` runs this very sequence with a report (`Checks`). Rules that refuse a
request naming its subject in another resolution's form come first: a `subject_token`
sent to an `on_behalf_of` profile, a `subject` or `actor_token` sent to the others
(SUBJECT_FORM_NOT_ACCEPTED), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from piigate.audit.event import AuditFacts
from piigate.config import IssuerConfig, Profile
from piigate.errors import SubjectFormNotAccepted
from piigate.identity.launch import check_patient_matches, launch_patient_id
from piigate.identity.on_behalf_of import (
    SubjectRef,
    check_actor_freshness,
    check_actor_issuer,
    check_actor_permission,
    named_subject_issuer,
    verify_actor,
)
from piigate.identity.pii_claim import pii_token_id
from piigate.identity.subject import refuse_denied_claims, verify_subject
from piigate.policy.decision import (
    Checks,
    DisclosureRequest,
    Plan,
    SubjectFacts,
    plan_checks,
    valid_purpose,
)
from piigate.tokens.claims import claim_values, granted_scopes
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier
from piigate.vault.binding import binding_tag, patient_tag

__all__ = ["Decision", "Item", "Party", "SubjectDecider", "SubjectRef"]


@dataclass(frozen=True, slots=True)
class Item:
    """One item of a call as the caller named its subject: a subject token, or a named
    subject; the actor token is the call's, the same for every item."""

    subject_token: str = ""
    subject: SubjectRef | None = None
    actor_token: str = ""


@dataclass(frozen=True, slots=True)
class Party:
    """A person as issuer + subject: `iss` and `sub`, or a FHIR server and a Patient id."""

    issuer: str
    subject: str


@dataclass(frozen=True, slots=True)
class Decision:
    """Stages 3–5 for one item: the token presented, whose data, who acts for them, the
    plan, and how the vault finds the record (a token id, or a tag alone)."""

    token: VerifiedToken  # the subject token, or for on_behalf_of the actor's
    subject: Party
    actor: Party | None  # None: the subject asks for their own data
    plan: Plan
    token_id: str | None  # None: the token that carries `tag`
    tag: str | None  # with a token id, the binding check; without, the selector


class SubjectDecider:
    """Stages 3–5, the decision sequence for one item: the gateway runs it for every
    item, and `piigate explain` runs the very same code with a report."""

    def __init__(self, verifier: TokenVerifier, issuers: Mapping[str, IssuerConfig]) -> None:
        self._verifier = verifier
        self._issuers = issuers

    async def decide(
        self,
        profile: Profile,
        item: Item | str,
        request: DisclosureRequest,
        now: float,
        facts: AuditFacts,
        checks: Checks | None = None,
    ) -> Decision:
        """The decision, or the first refusal raised; `facts` learns each stage's result
        as it is known, so a later refusal's event still says who and what. `item` may be
        a bare subject token."""
        c = checks or Checks()
        if isinstance(item, str):
            item = Item(item)
        # Only a valid purpose is recorded; an invalid one is refused by the plan.
        facts.purpose = valid_purpose(request.purpose)
        c.run("subject named as the profile resolves it", check_form, profile, item, request)
        if profile.subject_resolution == "on_behalf_of":
            return await self._on_behalf_of(c, profile, item, request, now, facts)
        return await self._token_holder(c, profile, item, request, now, facts)

    async def _token_holder(
        self, c: Checks, profile: Profile, item: Item, request: DisclosureRequest,
        now: float, facts: AuditFacts,
    ) -> Decision:
        """`token_claim` and `launch_patient`: the subject token's holder is the user, or
        the practitioner acting for the patient in the token's launch context."""
        token = await verify_subject(self._verifier, item.subject_token)
        issuer = self._issuers[token.issuer_name]
        holder = Party(issuer.issuer, token.subject)
        launch = profile.subject_resolution == "launch_patient"
        if launch:
            facts.actor_iss, facts.actor_sub = holder.issuer, holder.subject
        else:
            facts.subject_iss, facts.subject_sub = holder.issuer, holder.subject
        facts.jti = token.jti
        c.note("subject token verified", f"issuer {issuer.name}, sub {token.subject}")
        c.run("no deny-listed claims", refuse_denied_claims, token.claims, issuer.denied_claims)
        # Permission before existence (AIP-193): a token for another audience (an ID
        # token, say) is refused as such, whatever claims it carries.
        plan = plan_checks(c, profile, _facts_of(token, issuer), request, now)
        c.run("patient as launched", check_patient_matches, profile, request.patient,
              token.claims)
        if launch:
            patient = c.run("launch patient", launch_patient_id, profile, token.claims)
            namespace = profile.fhir_base or issuer.issuer
            if patient is not None:
                facts.subject_iss, facts.subject_sub = namespace, patient
            c.done()
            assert plan is not None  # done() raised otherwise
            assert patient is not None
            facts.reason, facts.adhoc_reason = plan.reason, plan.adhoc_reason
            tag = patient_tag(namespace, patient, issuer.binding_key)
            return Decision(token, Party(namespace, patient), holder, plan, None, tag)
        token_id = c.run("vault token claim present", pii_token_id, token.claims,
                         issuer.pii_token_claim)
        facts.token_id = token_id
        c.done()
        assert plan is not None  # done() raised otherwise
        assert token_id is not None
        facts.reason, facts.adhoc_reason = plan.reason, plan.adhoc_reason
        # Bound: the vault itself then refuses a token tagged for someone else.
        binding = (binding_tag(issuer.issuer, token.subject, issuer.binding_key)
                   if profile.bind_tokens else None)
        return Decision(token, holder, None, plan, token_id, binding)

    async def _on_behalf_of(
        self, c: Checks, profile: Profile, item: Item, request: DisclosureRequest,
        now: float, facts: AuditFacts,
    ) -> Decision:
        """A support agent (the actor token) for a customer named by issuer and `sub`."""
        rule = profile.actor
        assert rule is not None  # the config sets it for every on_behalf_of profile
        actor = await verify_actor(self._verifier, item.actor_token)
        actor_issuer = self._issuers[actor.issuer_name]
        facts.actor_iss, facts.actor_sub = actor_issuer.issuer, actor.subject
        facts.jti = actor.jti
        c.note("actor token verified", f"issuer {actor_issuer.name}, sub {actor.subject}")
        c.run("actor issuer allowed", check_actor_issuer, profile, rule, actor)
        c.run("no deny-listed claims", refuse_denied_claims, actor.claims,
              actor_issuer.denied_claims)
        c.run(f"actor permission {rule.permission}", check_actor_permission, profile, rule,
              actor.claims)
        c.run("actor authentication fresh", check_actor_freshness, profile, rule,
              actor.claims, now)
        plan = plan_checks(c, profile, _facts_of(actor, actor_issuer), request, now)
        ref = item.subject
        issuer = c.run("subject named", named_subject_issuer, profile, ref, self._issuers)
        if issuer is not None and ref is not None:
            facts.subject_iss, facts.subject_sub = issuer.issuer, ref.subject
        c.done()
        assert plan is not None  # done() raised otherwise
        assert issuer is not None
        assert ref is not None
        facts.reason, facts.adhoc_reason = plan.reason, plan.adhoc_reason
        tag = binding_tag(issuer.issuer, ref.subject, issuer.binding_key)
        return Decision(actor, Party(issuer.issuer, ref.subject),
                        Party(actor_issuer.issuer, actor.subject), plan, None, tag)


def check_form(profile: Profile, item: Item, request: DisclosureRequest) -> None:
    """The request names its subject as the profile resolves it, and in no other form."""
    resolution = profile.subject_resolution
    unexpected: tuple[tuple[str, object], ...]
    if resolution == "on_behalf_of":
        unexpected = (("subject_token", item.subject_token), ("patient", request.patient))
    else:
        unexpected = (("subject", item.subject), ("actor_token", item.actor_token))
    for name, value in unexpected:
        if value:
            raise SubjectFormNotAccepted({"field": name, "resolution": resolution})


def _facts_of(token: VerifiedToken, issuer: IssuerConfig) -> SubjectFacts:
    return SubjectFacts(
        audiences=claim_values(token.claims, issuer.audience_claims),
        scopes=granted_scopes(token.claims, issuer.scope_claims),
        claims=token.claims,
    )
