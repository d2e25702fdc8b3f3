"""piigate_dev.localvault.audit: one JSON line per access, names and ids only."""

from __future__ import annotations

import io
import json

from piigate_dev.localvault.audit import ID_LIST_MAX, AuditEvent, AuditSink, audit_line
from piigate_dev.localvault.params import Purpose


def test_line_fields() -> None:
    event = AuditEvent(
        "detokenize",
        "fhir",
        "users",
        Purpose("Other", "ticket 7", "run-42"),
        token_ids=["t1"],
        props=["ssn.mask"],
    )
    record = json.loads(audit_line(event, 0.0))
    assert record == {
        "time": "1970-01-01T00:00:00.000+00:00",
        "key": "fhir",
        "operation": "detokenize",
        "outcome": "ok",
        "reason": "Other",
        "adhoc_reason": "ticket 7",
        "custom_audit": "run-42",
        "collection": "users",
        "token_ids": ["t1"],
        "props": ["ssn.mask"],
    }


def test_long_id_lists_are_capped_with_their_count() -> None:
    ids = [f"t{i}" for i in range(ID_LIST_MAX + 5)]
    record = json.loads(
        audit_line(AuditEvent("detokenize", "k", "c", Purpose("Analytics"), token_ids=ids), 1.0)
    )
    assert len(record["token_ids"]) == ID_LIST_MAX
    assert record["token_ids_count"] == ID_LIST_MAX + 5


def test_sink_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    sink = AuditSink(stream)
    for _ in range(3):
        sink.write(AuditEvent("read", "k", "c", Purpose("Analytics")), 1.0)
    sink.close()
    assert len(stream.getvalue().splitlines()) == 3
    assert not stream.closed  # a stream the sink did not open is left open
