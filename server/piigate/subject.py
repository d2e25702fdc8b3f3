"""Stage 2: the end user's access token (`subject_token`).

Verified against its issuer's keys like the caller's credential; the audience is not
checked here but by the caller's profile (stage 4), which knows which audiences the
calling service may cash in.
"""

from __future__ import annotations

from piigate.errors import SubjectTokenMissing, TokenRejected
from piigate.tokens import TokenVerifier
from piigate.verification import VerifiedToken

SUBJECT_ROLE = "subject"


async def verify_subject(verifier: TokenVerifier, subject_token: str) -> VerifiedToken:
    """Verify the subject token or raise a TokenRejected tagged with the subject role."""
    if not subject_token:
        raise SubjectTokenMissing()
    try:
        return await verifier.verify(subject_token)
    except TokenRejected as exc:
        raise exc.for_role(SUBJECT_ROLE) from exc
