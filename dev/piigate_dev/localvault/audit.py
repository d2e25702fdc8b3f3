"""The local vault's audit log: one JSON line per data access, never a value.

A line holds the time, the key's name, the operation, the outcome, the reason (with its
capped free texts), the collection, the ids involved (capped at ID_LIST_MAX, with the
full count) and the property names. Values, secrets and transformation outputs never
reach it: the event type has no field that could hold one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from piigate_dev.localvault.params import Purpose

ID_LIST_MAX = 100


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One data access, described by names and ids only."""

    operation: str
    key: str
    collection: str
    purpose: Purpose
    outcome: str = "ok"
    token_ids: Sequence[str] = ()
    object_ids: Sequence[str] = ()
    props: Sequence[str] = ()


def audit_line(event: AuditEvent, now: float) -> str:
    """The JSON line for `event` at `now` (seconds since the epoch)."""
    record: dict[str, Any] = {
        "time": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds"),
        "key": event.key,
        "operation": event.operation,
        "outcome": event.outcome,
        "reason": event.purpose.reason,
        "collection": event.collection,
    }
    if event.purpose.adhoc_reason is not None:
        record["adhoc_reason"] = event.purpose.adhoc_reason
    if event.purpose.custom_audit is not None:
        record["custom_audit"] = event.purpose.custom_audit
    for name, ids in (("token_ids", event.token_ids), ("object_ids", event.object_ids)):
        if ids:
            record[name] = list(ids[:ID_LIST_MAX])
            if len(ids) > ID_LIST_MAX:
                record[f"{name}_count"] = len(ids)
    if event.props:
        record["props"] = list(event.props)
    return json.dumps(record, separators=(",", ":"))


class AuditSink:
    """Writes audit lines to a text stream, one flushed line per event."""

    def __init__(self, stream: TextIO, *, owned: bool = False) -> None:
        self._stream = stream
        self._owned = owned

    @classmethod
    def open(cls, path: str | None) -> AuditSink:
        """Append to the file at `path`, or write to stderr when None."""
        if path is None:
            return cls(sys.stderr)
        return cls(open(path, "a", encoding="utf-8"), owned=True)

    def write(self, event: AuditEvent, now: float) -> None:
        """Write one line for `event`."""
        self._stream.write(audit_line(event, now) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Close the file this sink opened (stderr is left alone)."""
        if self._owned:
            self._stream.close()
