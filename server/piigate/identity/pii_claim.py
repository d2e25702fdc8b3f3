"""Stage 5: the vault token id in the subject token's namespaced claim.

The claim name (default `https://example.com/pii_token`) is one opaque key, never a
dotted path: it contains dots and slashes by design (Auth0 requires namespaced custom
claims). The value must look like a vault token id before it is sent anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from piigate.errors import PiiTokenClaimInvalid, PiiTokenClaimMissing

# Piiano token ids: caller-chosen ids are letters, digits, '-' and '_' up to 128; generated
# ones are UUIDs, which fit the same pattern. Always `fullmatch`: with `match`, `$` also
# matches before a final newline, so "-\n" would pass and reach the vault's URL.
TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def pii_token_id(claims: Mapping[str, Any], claim_name: str) -> str:
    """The vault token id carried in `claims[claim_name]`."""
    if claim_name not in claims:
        raise PiiTokenClaimMissing()
    value = claims[claim_name]
    if not isinstance(value, str) or not TOKEN_ID.fullmatch(value):
        raise PiiTokenClaimInvalid()
    return value
