"""API keys and what they may do (pure).

A key holds policies; each policy allows some operations (`tokenize`, `detokenize`,
`read`, `write`) on some collections and properties for some reasons. `*` is a wildcard
in every list. A property resource is `name` or `name.transformation`:

- `ssn` allows the raw value and every transformation of it (a mask reveals less than
  the value, so it would be pointless to refuse it);
- `ssn.mask` allows only the masked value: a support tool can see `***-**-1234` and
  never `123-12-1234` (least privilege);
- `ssn.*` allows every transformation of ssn but not the raw value; `*.mask` the mask of
  every property.

Rules: (1) a key that no policy links to a collection cannot see it at all (it gets the
same 404 as for a missing collection, so names are not probed); (2) a request is allowed
only when every property it touches is allowed by a policy that also allows the
operation, the collection and the reason. There are no deny rules: anything not allowed
is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OPERATIONS: frozenset[str] = frozenset({"tokenize", "detokenize", "read", "write"})
WILDCARD = "*"
DEV_ADMIN_SECRET = "pvaultauth"  # noqa: S105 (the public default of the dev image)
"""The admin key of Piiano's development image, used when no keys are configured."""


def _matches(allowed: frozenset[str], item: str) -> bool:
    return WILDCARD in allowed or item in allowed


@dataclass(frozen=True, slots=True)
class Policy:
    """Operations allowed on collections and properties for reasons."""

    operations: frozenset[str]
    collections: frozenset[str]
    properties: frozenset[str]
    reasons: frozenset[str]

    def covers(self, operation: str, collection: str) -> bool:
        """True when this policy speaks about `operation` on `collection`."""
        return _matches(self.operations, operation) and _matches(self.collections, collection)

    def allows_reason(self, reason: str | None) -> bool:
        """True for an allowed reason; control calls carry no reason (None)."""
        return reason is None or _matches(self.reasons, reason)

    def allows_property(self, resource: str) -> bool:
        """True when `resource` (`ssn`, `ssn.mask`, or `*` for all) is allowed."""
        if WILDCARD in self.properties or resource in self.properties:
            return True
        name, dot, transformation = resource.partition(".")
        if not dot:
            return False
        # Raw access implies transformed access; `ssn.*` and `*.mask` are patterns.
        return bool({name, f"{name}.{WILDCARD}", f"{WILDCARD}.{transformation}"} & self.properties)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A named API key: the SHA-256 of its secret and its policies."""

    name: str
    secret_sha256: bytes
    policies: tuple[Policy, ...]

    def __repr__(self) -> str:
        # The digest is not the secret, but it has no business in logs either.
        return f"ApiKey(name={self.name!r}, policies={len(self.policies)})"

    def can_see(self, collection: str) -> bool:
        """True when some policy names `collection` (rule 1)."""
        return any(_matches(policy.collections, collection) for policy in self.policies)

    def denial(
        self, operation: str, collection: str, resources: Iterable[str], reason: str | None
    ) -> dict[str, str] | None:
        """None when allowed (rule 2), else what was refused (names only, no values)."""
        covering = [policy for policy in self.policies if policy.covers(operation, collection)]
        if not covering:
            return {"operation": operation, "collection": collection}
        covering = [policy for policy in covering if policy.allows_reason(reason)]
        if not covering:
            return {"operation": operation, "reason": str(reason)}
        for resource in resources:
            if not any(policy.allows_property(resource) for policy in covering):
                return {"operation": operation, "property": resource}
        return None


ADMIN_POLICY = Policy(
    operations=frozenset({WILDCARD}),
    collections=frozenset({WILDCARD}),
    properties=frozenset({WILDCARD}),
    reasons=frozenset({WILDCARD}),
)


def secret_digest(secret: str) -> bytes:
    """The SHA-256 of a key secret, the only form in which secrets are kept."""
    return hashlib.sha256(secret.encode()).digest()


def admin_key(name: str, secret: str) -> ApiKey:
    """A key allowed everything (the development default and the test helper's key)."""
    return ApiKey(name, secret_digest(secret), (ADMIN_POLICY,))


def authenticate(keys: Sequence[ApiKey], presented: str) -> ApiKey | None:
    """The key whose secret is `presented`, compared in constant time, else None."""
    digest = secret_digest(presented)
    found: ApiKey | None = None
    # Compare against every key, without stopping early, so timing does not say which
    # key (if any) came close.
    for key in keys:
        if hmac.compare_digest(digest, key.secret_sha256) and found is None:
            found = key
    return found
