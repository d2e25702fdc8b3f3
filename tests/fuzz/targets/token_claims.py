"""Readers of verified claims: identity.pii_claim.pii_token_id and tokens.claims.

The claims are signed by a trusted issuer, but their values come from whoever the issuer
lets set them (a user profile, an admin console), so they are read as outside input.

Input: a JSON document (read with strictjson, as verification does), frozen as `verify`
returns claims (arrays as tuples). Documented errors: `PiiTokenClaimMissing`,
`PiiTokenClaimInvalid`. Oracle: a vault token id is only ever letters, digits, `-` and
`_`, 1-128 of them, so nothing else reaches the vault's URL.
"""

from __future__ import annotations

import re
from typing import Any

from piigate import strictjson
from piigate.errors import PiiTokenClaimInvalid, PiiTokenClaimMissing
from piigate.identity.pii_claim import pii_token_id
from piigate.tokens.claims import claim_values, granted_scopes
from tests.fuzz.targets import Finding, expand

CLAIM = "https://example.com/pii_token"
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def fuzz(data: bytes) -> None:
    data = expand(data)
    try:
        claims = strictjson.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(claims, dict):
        return
    claims = _frozen(claims)
    for name in (CLAIM, "pii"):
        try:
            token_id = pii_token_id(claims, name)
        except (PiiTokenClaimMissing, PiiTokenClaimInvalid):
            continue
        if not _TOKEN_ID.fullmatch(token_id) or "\n" in token_id:
            raise Finding(f"token id {token_id!r} would reach the vault's URL")
    for values in (claim_values(claims, ("azp", "client_id", "cid")),
                   granted_scopes(claims, ("scope", "scp", "permissions"))):
        if not all(isinstance(value, str) for value in values):
            raise Finding("a claim value that is not a string")
    if isinstance(claims.get("scope"), str) and any(
        not s or s != s.strip() for s in granted_scopes(claims, ("scope",))
    ):
        raise Finding("a space-separated scope kept its spaces")


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _frozen(item) for name, item in value.items()}
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value
