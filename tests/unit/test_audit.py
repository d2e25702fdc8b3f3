"""Audit events: JSON lines without PII values, and a sink that fails closed (the chained
sink piigate writes with; its chaining is tested in test_audit_chain.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from piigate.audit.event import AuditEvent, FieldDisclosure
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.errors import AuditUnavailable


def event() -> AuditEvent:
    return AuditEvent(
        time=1700000000.5, request_id="r1", outcome="allowed", caller="fhir-app",
        caller_issuer="dev", subject_iss="https://issuer/", subject_sub="user-1", jti="j1",
        token_id="tok-1", profile="fhir", reason="AppFunctionality",
        fields=(FieldDisclosure("user_id", "raw"), FieldDisclosure("ssn", "masked")),
    )


def unchained(line: bytes) -> dict[str, object]:
    """An audit line without its chain link (`prev`)."""
    data = json.loads(line)
    assert isinstance(data, dict)
    del data["prev"]
    return data


async def test_one_compact_json_line_per_event_with_unset_facts_left_out() -> None:
    stream = io.BytesIO()
    sink = ChainedJsonLinesSink(stream)
    await sink.write(event())
    await sink.write(AuditEvent(time=1.0, request_id="r2", outcome="denied",
                                error_reason="CALLER_WITHOUT_PROFILE"))
    first, second = (unchained(line) for line in stream.getvalue().splitlines())
    assert first["fields"] == [{"disclosure": "raw", "name": "user_id"},
                               {"disclosure": "masked", "name": "ssn"}]
    assert first["event"] == "disclosure"
    assert second == {"event": "disclosure", "error_reason": "CALLER_WITHOUT_PROFILE",
                      "outcome": "denied", "request_id": "r2",
                      "time": "1970-01-01T00:00:01.000+00:00"}


async def test_file_sink_appends_with_owner_only_permissions(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for _ in range(2):
        sink = ChainedJsonLinesSink.open(path, fsync=True)
        await sink.write(event())
        await sink.close()
    assert len(path.read_text().splitlines()) == 2
    assert path.stat().st_mode & 0o777 == 0o600


async def test_a_sink_that_cannot_write_raises_audit_unavailable() -> None:
    stream = io.BytesIO()
    stream.close()
    with pytest.raises(AuditUnavailable):
        await ChainedJsonLinesSink(stream).write(event())


def test_to_json_is_to_dict_in_compact_sorted_ascii_form() -> None:
    e = AuditEvent(time=1700000000.5, request_id="r1", outcome="allowed", caller="Zoë",
                   fields=(FieldDisclosure("dob", "redacted", note="step-up unmet"),))
    data = e.to_dict()
    assert e.to_json() == json.dumps(data, separators=(",", ":"), sort_keys=True)
    assert e.to_json() == (
        '{"caller":"Zo\\u00eb","event":"disclosure","fields":[{"disclosure":"redacted",'
        '"name":"dob","note":"step-up unmet"}],"outcome":"allowed","request_id":"r1",'
        '"time":"2023-11-14T22:13:20.500+00:00"}'
    )


def test_to_dict_is_a_fresh_dict_each_time() -> None:
    e = event()
    first = e.to_dict()
    first["prev"] = "0" * 64  # what the chained sink does with it
    assert "prev" not in e.to_dict()
    assert json.loads(e.to_json()) == e.to_dict()
