"""Stage 5: the vault token id in the subject token's namespaced claim.

The claim is a path of claim names (`issuers[].pii_token_claim`). Usually it is one name
(default `https://example.com/pii_token`), taken whole: it contains dots and slashes by
design (Auth0 requires namespaced custom claims), so a name is never split on dots. A
path of several names walks into nested objects (`["app_metadata", "pii_token"]`); the
config refuses a dotted name that is not a URI, which would otherwise never match. The
value must look like a vault token id before it is sent anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from piigate.errors import PiiTokenClaimInvalid, PiiTokenClaimMissing

# Piiano token ids: caller-chosen ids are letters, digits, '-' and '_' up to 128; generated
# ones are UUIDs, which fit the same pattern. Always `fullmatch`: with `match`, `$` also
# matches before a final newline, so "-\n" would pass and reach the vault's URL.
TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def pii_token_id(claims: Mapping[str, Any], claim: str | Sequence[str]) -> str:
    """The vault token id at `claim` in `claims`: one claim name, or a path of names
    into nested objects. Missing anywhere on the path: PiiTokenClaimMissing; a step that
    is not an object, or a value that is not a token id: PiiTokenClaimInvalid."""
    path = (claim,) if isinstance(claim, str) else tuple(claim)
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping):
            raise PiiTokenClaimInvalid()
        if name not in value:
            raise PiiTokenClaimMissing()
        value = value[name]
    if not path or not isinstance(value, str) or not TOKEN_ID.fullmatch(value):
        raise PiiTokenClaimInvalid()
    return value
