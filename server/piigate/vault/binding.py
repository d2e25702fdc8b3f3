"""The tag that binds a vault token to the user it belongs to.

When a user's PII is tokenized (the identity provider's Action, or the dev issuer's
migration helper), the vault token is tagged with `binding_tag(iss, sub)`. A profile that
requires binding asks the vault for `token_ids=T&tags=<tag of this token's iss+sub>`;
Piiano intersects the two, so a token that belongs to another user matches nothing.

The tag is a hash, so neither the vault nor its audit log learns the user id from it; with
a key it cannot be recomputed by anyone who lacks the key.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_PREFIX = "piigate-sub-"


def binding_tag(issuer: str, subject: str, key: bytes | None = None) -> str:
    """`piigate-sub-` + 32 hex digits of SHA-256 (or HMAC-SHA-256 under `key`) of iss+sub.

    The issuer and subject are joined with a NUL byte, which neither may contain, so no two
    (iss, sub) pairs share an input.
    """
    message = issuer.encode() + b"\x00" + subject.encode()
    digest = (
        hmac.new(key, message, hashlib.sha256).hexdigest()
        if key
        else hashlib.sha256(message).hexdigest()
    )
    return TAG_PREFIX + digest[:32]
