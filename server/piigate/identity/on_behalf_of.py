"""Stage 3 for `on_behalf_of` profiles (support tooling): the acting agent and the
customer they act for.

The names follow RFC 8693 (OAuth 2.0 Token Exchange) §2.1: `actor_token` is the acting
party's own access token, `subject` names the party whose data is wanted. Unlike a token
exchange, the subject is named (`SubjectRef`: a configured issuer name and the `sub` it
knows the customer as), never presented: a support console holds the agent's login and a
customer id from the ticket, not the customer's token. Rules, in the order they run:

1. the actor token is present (ACTOR_TOKEN_MISSING) and verifies exactly as a subject
   token does, a JWT or an introspected opaque token (every TOKEN_* rule, `token_role`
   "actor");
2. its issuer is one of the profile's `actor_issuers` (ACTOR_ISSUER_NOT_ALLOWED): a
   customer's own token never acts for anyone;
3. it carries the profile's `actor_permission` in `actor_permission_claim`, a claim name
   or a path into nested claims, read as a space-separated string or an array of strings
   (Auth0 `permissions`, Keycloak `realm_access.roles`, Okta `groups` or `scp`)
   (ACTOR_PERMISSION_MISSING);
4. it meets `actor_acr` and `actor_max_auth_age_s` when set (STEP_UP_REQUIRED, `token_role`
   "actor"), judged by the same rule as a field's step-up;
5. the subject is well formed (SUBJECT_REF_INVALID) and its issuer is one of the
   profile's `subject_issuers` (SUBJECT_ISSUER_NOT_ALLOWED).

Errors name the rule and the profile's own settings, never a claim's value or the subject.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from piigate.config import ActorRule, IssuerConfig, Profile, StepUp
from piigate.errors import (
    ActorIssuerNotAllowed,
    ActorPermissionMissing,
    ActorTokenMissing,
    StepUpRequired,
    SubjectIssuerNotAllowed,
    SubjectRefInvalid,
)
from piigate.identity.subject import verify_in_role
from piigate.policy.decision import unmet_step_up
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier

ACTOR_ROLE = "actor"
# Subject identifiers are short in every provider (Auth0's `google-oauth2|1006...` is 35
# characters); the bound keeps a named subject from carrying anything else.
MAX_SUBJECT = 255


@dataclass(frozen=True, slots=True)
class SubjectRef:
    """A data subject named without their token: issuer (by configured name) and `sub`."""

    issuer: str
    subject: str


async def verify_actor(verifier: TokenVerifier, actor_token: str) -> VerifiedToken:
    """Rule 1: the verified actor token, or a TokenRejected tagged with the actor role.
    Exactly as a subject token: a workforce IdP's opaque token is introspected too."""
    return await verify_in_role(verifier, actor_token, ACTOR_ROLE, ActorTokenMissing)


def check_actor_issuer(profile: Profile, rule: ActorRule, actor: VerifiedToken) -> None:
    """Rule 2."""
    if actor.issuer_name not in rule.issuers:
        raise ActorIssuerNotAllowed({"profile": profile.name})


def check_actor_permission(profile: Profile, rule: ActorRule, claims: Mapping[str, Any]) -> None:
    """Rule 3."""
    if rule.permission not in permission_values(claims, rule.permission_claim):
        raise ActorPermissionMissing({"profile": profile.name, "permission": rule.permission})


def permission_values(claims: Mapping[str, Any], path: tuple[str, ...]) -> frozenset[str]:
    """The strings at `path`: each step one opaque key into a JSON object (a namespaced
    claim name is never split), the last a space-separated string or an array."""
    value: Any = claims
    for key in path:
        if not isinstance(value, Mapping):
            return frozenset()
        value = value.get(key)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):  # verified claims hold JSON arrays as tuples
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def check_actor_freshness(profile: Profile, rule: ActorRule, claims: Mapping[str, Any],
                          now: float) -> None:
    """Rule 4: the profile-wide conditions on the agent's login, read as a step-up rule
    that refuses."""
    if not rule.acr and rule.max_auth_age_s is None:
        return
    unmet = unmet_step_up(StepUp(frozenset(), rule.acr, rule.max_auth_age_s, "refuse"), "",
                          claims, now)
    if unmet is not None:
        raise StepUpRequired({"profile": profile.name, "unmet": unmet, "token_role": ACTOR_ROLE})


def named_subject_issuer(profile: Profile, ref: SubjectRef | None,
                         issuers: Mapping[str, IssuerConfig]) -> IssuerConfig:
    """Rule 5: the issuer the named subject belongs to."""
    if ref is None:
        raise SubjectRefInvalid({"detail": "missing"})
    if not ref.issuer:
        raise SubjectRefInvalid({"detail": "issuer"})
    subject = ref.subject
    if not subject or len(subject) > MAX_SUBJECT or not subject.isprintable():
        raise SubjectRefInvalid({"detail": "subject"})
    issuer = issuers.get(ref.issuer)
    if issuer is None or ref.issuer not in profile.subject_issuers:
        raise SubjectIssuerNotAllowed({"profile": profile.name})
    return issuer
