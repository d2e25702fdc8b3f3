"""Reading verified claims whose name and shape differ by identity provider."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def claim_values(claims: Mapping[str, Any], names: Sequence[str]) -> frozenset[str]:
    """The string values of the first of `names` present (a string or an array of them)."""
    for name in names:
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset((value,))
        if isinstance(value, list | tuple):  # verified claims hold JSON arrays as tuples
            return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def granted_scopes(claims: Mapping[str, Any], scope_claims: Sequence[str]) -> frozenset[str]:
    """Scopes from a space-separated `scope` string or an array (`scp`, `permissions`),
    whichever of the issuer's scope claims is present first."""
    for name in scope_claims:
        value = claims.get(name)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list | tuple):
            return frozenset(v for v in value if isinstance(v, str))
    return frozenset()
