"""Stage 8: shape what the vault returned into the disclosed fields, pure.

The vault has already applied masks (`ssn.mask`); piigate never unmasks and never
returns a property the plan did not name. A masked value may come back keyed either
`ssn.mask` or `ssn` (Piiano's detokenize answer is not documented either way), and both
are accepted because the plan asked only for the mask of that property.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from piigate.policy.decision import Plan

DisclosureKind = Literal["raw", "masked", "redacted"]
_KIND: dict[str, DisclosureKind] = {"raw": "raw", "mask": "masked", "redact": "redacted"}


@dataclass(frozen=True, slots=True)
class DisclosedValue:
    name: str
    value: str
    disclosure: DisclosureKind

    def __repr__(self) -> str:  # values are PII: never in a repr, a log line or a traceback
        return f"DisclosedValue(name={self.name!r}, disclosure={self.disclosure!r})"


@dataclass(frozen=True, slots=True)
class Disclosure:
    """The successful outcome of one subject token: what the caller is told."""

    token_id: str
    profile: str
    reason: str
    fields: tuple[DisclosedValue, ...]
    notes: Mapping[str, str]  # field -> why it was disclosed in a lesser form


def disclose(plan: Plan, token_id: str, vault_fields: Mapping[str, Any]) -> Disclosure:
    """The disclosure of one vault record under `plan`."""
    return Disclosure(token_id, plan.profile.name, plan.reason, shape(plan, vault_fields),
                      plan.notes)


def shape(plan: Plan, vault_fields: Mapping[str, Any]) -> tuple[DisclosedValue, ...]:
    """The fields to disclose, in profile order. A property the vault did not return
    (null or absent in the record) is left out rather than invented."""
    out: list[DisclosedValue] = []
    for name, disposition in plan.fields:
        if disposition == "redact":
            out.append(DisclosedValue(name, "", "redacted"))
            continue
        key = f"{name}.mask" if disposition == "mask" else name
        value = vault_fields.get(key)
        if value is None and disposition == "mask":
            value = vault_fields.get(name)
        if value is None:
            continue
        out.append(DisclosedValue(name, _text(value), _KIND[disposition]))
    return tuple(out)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
