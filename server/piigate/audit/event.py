"""Stage 9: the audit event. One JSON line per decision, allowed or denied.

An event says who (caller, subject as `iss` + `sub`, `jti`; and when someone acts for
the subject, the actor as `iss` + `sub`: the support agent, the practitioner), what (vault
token id, fields and how each was disclosed), why (reason, and the operator's purpose
such as a ticket reference), under which profile, and the outcome with its error reason.
For a SMART launch patient the subject is the FHIR server (`fhir_base`, or the
practitioner's issuer) and the Patient id. It holds no PII values and no tokens: the
vault token id is a pointer, not data. PII is returned only after its event is written
(fail closed: an audit sink that cannot write stops disclosure, as HashiCorp Vault does).
"""

from __future__ import annotations

import json
import time
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
    actor_iss: str | None = None  # who acted for the subject (on_behalf_of, launch_patient)
    actor_sub: str | None = None
    purpose: str | None = None  # the operator's purpose (a ticket reference); never PII
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
        canonical form the chained trail hashes (see `piigate.audit.format`)."""
        return JSON_ENCODER.encode(self.to_dict())


_EVENT_FIELDS = tuple(f.name for f in fields(AuditEvent))


@dataclass(slots=True)
class AuditFacts:
    """What the stages have established about one call (or one item of a batch) so far:
    the who and why of its event. The pipeline's envelope records each stage's result
    here as the stage returns it, so that whichever stage refuses, the event says all
    that was known by then. Never a value, never a token."""

    request_id: str
    started: float
    batch_id: str | None = None
    caller: str | None = None
    caller_issuer: str | None = None
    caller_peer: str | None = None
    profile: str | None = None
    subject_iss: str | None = None
    subject_sub: str | None = None
    jti: str | None = None
    token_id: str | None = None
    reason: str | None = None
    adhoc_reason: str | None = None
    actor_iss: str | None = None
    actor_sub: str | None = None
    purpose: str | None = None
    #: When the call began on a monotonic clock, for its duration metric (`started` is
    #: the gateway's clock, which tests move; it dates the event).
    began: float = field(default_factory=time.perf_counter)

    def for_item(self, request_id: str) -> AuditFacts:
        """The facts of one item of a call: the caller's, under the item's own id."""
        return AuditFacts(
            request_id, self.started, self.batch_id, self.caller, self.caller_issuer,
            self.caller_peer, self.profile, began=self.began,
        )

    def event(
        self,
        outcome: str,
        fields: Sequence[FieldDisclosure] = (),
        error_reason: str | None = None,
        event: str = "disclosure",
    ) -> AuditEvent:
        """The event that records this call's outcome."""
        return AuditEvent(
            time=self.started, request_id=self.request_id, outcome=outcome,
            batch_id=self.batch_id, caller=self.caller, caller_issuer=self.caller_issuer,
            caller_peer=self.caller_peer, subject_iss=self.subject_iss,
            subject_sub=self.subject_sub, jti=self.jti, token_id=self.token_id,
            profile=self.profile, reason=self.reason, adhoc_reason=self.adhoc_reason,
            actor_iss=self.actor_iss, actor_sub=self.actor_sub, purpose=self.purpose,
            fields=tuple(fields), error_reason=error_reason, event=event,
        )


class AuditSink(Protocol):
    """Writes audit events; `write` returns only once the event is as durable as
    configured, and raises AuditUnavailable when it cannot write."""

    async def write(self, event: AuditEvent) -> None: ...

    async def close(self) -> None: ...
