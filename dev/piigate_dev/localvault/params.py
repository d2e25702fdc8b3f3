"""Query parameters of data calls: reasons, list encodings, props, options (pure).

A query is taken as the ordered list of `(key, value)` pairs the client sent, so both
list encodings Piiano clients use are accepted for every list parameter: repeated keys
(`token_ids=a&token_ids=b`, what the generated clients send) and comma-separated values
(`token_ids=a,b`, what the docs show), also mixed. Empty items are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from piigate.vault import piiano
from piigate_dev.localvault.errors import (
    AdhocReasonMissing,
    ReasonInvalid,
    ReasonMissing,
    RequestInvalid,
)

Query = Sequence[tuple[str, str]]

REASONS: frozenset[str] = frozenset(piiano.REASONS)
"""Exactly the ten access reasons Piiano Vault accepts."""

AUDIT_TEXT_MAX = 256
"""Free-text audit fields (adhoc_reason, custom_audit) are cut to this many characters."""

LIST_MAX = 1000
"""Most items one list parameter may carry: bounds the work of one request."""

EXPIRATION_MAX_SECS = 100 * 366 * 86_400
"""The longest `expiration_secs` (about a century; -1 is "never"): an expiry is stored as
a float of seconds since the epoch, and a 309-digit one would not fit."""


@dataclass(frozen=True, slots=True)
class Purpose:
    """Why the caller accesses data: the reason and its free-text companions."""

    reason: str
    adhoc_reason: str | None = None
    custom_audit: str | None = None


@dataclass(frozen=True, slots=True)
class PropRef:
    """A requested property, possibly transformed: `ssn` or `ssn.mask`."""

    name: str
    transformation: str | None = None

    @property
    def key(self) -> str:
        """The answer key, which carries the transformation (`ssn.mask`)."""
        return f"{self.name}.{self.transformation}" if self.transformation else self.name


def single_param(query: Query, name: str) -> str | None:
    """The one value of `name`, None when absent; repeated keys are refused."""
    values = [value for key, value in query if key == name]
    if len(values) > 1:
        raise RequestInvalid(parameter=name, problem="given more than once")
    return values[0] if values else None


def list_param(query: Query, name: str) -> tuple[str, ...]:
    """Every item of list parameter `name`, in order, duplicates removed."""
    items: dict[str, None] = {}
    for key, value in query:
        if key != name:
            continue
        for item in value.split(","):
            item = item.strip()
            if item:
                items[item] = None
    if len(items) > LIST_MAX:
        raise RequestInvalid(parameter=name, problem=f"more than {LIST_MAX} items")
    return tuple(items)


def _cap(text: str | None) -> str | None:
    return None if text is None else text[:AUDIT_TEXT_MAX]


def parse_purpose(query: Query) -> Purpose:
    """The `reason` (required, one of REASONS), `adhoc_reason` and `custom_audit`."""
    reason = single_param(query, "reason")
    if reason is None or not reason.strip():
        raise ReasonMissing()
    if reason not in REASONS:
        raise ReasonInvalid()
    adhoc = single_param(query, "adhoc_reason")
    if reason == "Other" and not (adhoc and adhoc.strip()):
        raise AdhocReasonMissing()
    return Purpose(reason, _cap(adhoc), _cap(single_param(query, "custom_audit")))


def parse_props(items: Sequence[str]) -> tuple[PropRef, ...]:
    """Parse `ssn`, `ssn.mask` items; the property and transformation are checked later."""
    refs: list[PropRef] = []
    for item in items:
        name, dot, transformation = item.partition(".")
        if not name or (dot and not transformation) or "." in transformation:
            raise RequestInvalid(parameter="props", problem="expected NAME or NAME.TRANSFORMATION")
        refs.append(PropRef(name, transformation or None))
    return tuple(refs)


def parse_options(query: Query, allowed: frozenset[str]) -> frozenset[str]:
    """The `options` list, every item being one of `allowed`."""
    options = frozenset(list_param(query, "options"))
    unknown = options - allowed
    if unknown:
        raise RequestInvalid(parameter="options", problem=f"unknown option {sorted(unknown)[0]}")
    return options


def parse_expiration(query: Query) -> int | None:
    """`expiration_secs`: seconds until a token expires; absent or -1 means never."""
    text = single_param(query, "expiration_secs")
    if text is None:
        return None
    try:
        seconds = int(text)
    except ValueError:
        raise RequestInvalid(parameter="expiration_secs", problem="not an integer") from None
    if seconds == -1:
        return None
    if seconds <= 0:
        raise RequestInvalid(parameter="expiration_secs", problem="must be positive or -1")
    if seconds > EXPIRATION_MAX_SECS:
        raise RequestInvalid(
            parameter="expiration_secs", problem=f"must be at most {EXPIRATION_MAX_SECS}"
        )
    return seconds
