"""Stage 3: the end user's access token (`subject_token`).

Verified against its issuer's keys like the caller's credential, or, from an issuer with
`token_format = "opaque"`, by introspection (the caller's credential is always a JWT,
so only an authenticated caller can make piigate introspect anything); the audience is not
checked here but by the caller's profile (stage 4), which knows which audiences the
calling service may cash in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from piigate.errors import (
    GatewayError,
    SubjectTokenMissing,
    TokenCarriesDeniedClaim,
    TokenRejected,
)
from piigate.tokens.verification import VerifiedToken
from piigate.tokens.verifier import TokenVerifier

SUBJECT_ROLE = "subject"


async def verify_subject(verifier: TokenVerifier, subject_token: str) -> VerifiedToken:
    """Verify the subject token or raise a TokenRejected tagged with the subject role."""
    return await verify_in_role(verifier, subject_token, SUBJECT_ROLE, SubjectTokenMissing)


async def verify_in_role(
    verifier: TokenVerifier, token: str, role: str, missing: type[GatewayError]
) -> VerifiedToken:
    """A token a request carries for someone (the subject, or the actor of
    `on_behalf_of`): `missing` when empty, else verified like any subject token (an opaque
    one by introspection) or a TokenRejected tagged with `role`."""
    if not token:
        raise missing()
    try:
        return await verifier.verify(token, accept_opaque=True)
    except TokenRejected as exc:
        raise exc.for_role(role) from exc


def refuse_denied_claims(claims: Mapping[str, Any], denied: Sequence[str]) -> None:
    """Refuse a token that carries raw PII its issuer promised to keep in the vault (an
    identity provider's deny list, e.g. Auth0's `non_persistent_attrs`, enforced
    downstream). The error names the claim, never its value."""
    for name in denied:
        if name in claims:
            raise TokenCarriesDeniedClaim({"claim": name})
