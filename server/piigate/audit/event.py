"""Stage 9: the audit trail. One JSON line per decision, allowed or denied.

An event says who (caller, subject as `iss` + `sub`, `jti`), what (vault token id,
fields and how each was disclosed), why (reason), under which profile, and the outcome
with its error reason. It holds no PII values and no tokens: the vault token id is a
pointer, not data. PII is returned only after its event is written (fail closed: an
audit sink that cannot write stops disclosure, as HashiCorp Vault does).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Protocol

# `json.dumps(obj, separators=(",", ":"), sort_keys=True)` (ASCII only, the default), built
# once: `json.dumps` with any non-default argument builds a new encoder on every call.
JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class FieldDisclosure:
    name: str
    disclosure: str  # raw | masked | redacted
    note: str | None = None  # why a lesser form than the profile's (e.g. step-up unmet)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    time: float
    request_id: str
    outcome: str  # allowed | denied | failed
    batch_id: str | None = None  # set on every item of a BatchDetokenize call
    caller: str | None = None
    caller_issuer: str | None = None
    caller_peer: str | None = None  # the client certificate's SPIFFE ID or SANs
    subject_iss: str | None = None
    subject_sub: str | None = None
    jti: str | None = None
    token_id: str | None = None
    profile: str | None = None
    reason: str | None = None
    adhoc_reason: str | None = None
    fields: Sequence[FieldDisclosure] = field(default_factory=tuple)
    error_reason: str | None = None
    event: str = "disclosure"

    def to_dict(self) -> dict[str, object]:
        """The members of the event's JSON object, ready for `json.dumps`: a fresh dict
        the caller may extend (the chained sink adds `prev`). `time` is RFC 3339 UTC with
        milliseconds; unset facts are left out. (Built field by field: `dataclasses.asdict`
        deep-copies, and this runs once per call.)"""
        data: dict[str, object] = {}
        for name in _EVENT_FIELDS:
            value = getattr(self, name)
            if value is not None and value != ():
                data[name] = value
        data["time"] = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="milliseconds")
        if self.fields:
            data["fields"] = [
                {"name": f.name, "disclosure": f.disclosure, **({"note": f.note} if f.note else {})}
                for f in self.fields
            ]
        return data

    def to_json(self) -> str:
        """One compact JSON object with sorted keys and ASCII only: `to_dict` in the
        canonical form the chained trail hashes (see `piigate.audit.chain`)."""
        return JSON_ENCODER.encode(self.to_dict())


_EVENT_FIELDS = tuple(f.name for f in fields(AuditEvent))


class AuditSink(Protocol):
    """Writes audit events; `write` returns only once the event is as durable as
    configured, and raises AuditUnavailable when it cannot write."""

    async def write(self, event: AuditEvent) -> None: ...

    async def close(self) -> None: ...
