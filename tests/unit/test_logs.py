"""The log format: one JSON object per line with a closed list of fields, exceptions by
type and stack only, and a text form for development."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from piigate.telemetry import logs

RFC3339_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    log = logging.getLogger("piigate.test_logs")
    handler = logs.handler("json", stream)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log, stream
    log.removeHandler(handler)
    log.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_known_context(
    logger: tuple[logging.Logger, io.StringIO]
) -> None:
    log, stream = logger
    log.info("call %s: %s", "denied", "TOKEN_EXPIRED", extra={
        "request_id": "ab" * 16, "caller": "support-tool", "profile": "support",
        "outcome": "denied", "error_reason": "TOKEN_EXPIRED", "batch_id": None,
        "subject": "auth0|alice", "token": "eyJ..."})  # not on the list: never written
    (line,) = lines(stream)
    assert RFC3339_UTC_MS.match(str(line.pop("time")))
    assert line == {"level": "INFO", "logger": "piigate.test_logs",
                    "message": "call denied: TOKEN_EXPIRED", "request_id": "ab" * 16,
                    "caller": "support-tool", "profile": "support", "outcome": "denied",
                    "error_reason": "TOKEN_EXPIRED"}


def test_an_exception_is_its_type_and_stack_never_its_text(
    logger: tuple[logging.Logger, io.StringIO]
) -> None:
    log, stream = logger
    value = "-".join(("123", "45", "6789"))  # built here, so no source line shows it
    try:
        raise ValueError(f"ssn {value}")
    except ValueError:
        log.exception("a listener failed")
    (line,) = lines(stream)
    assert line["error_type"] == "ValueError"
    assert "test_an_exception_is_its_type_and_stack" in str(line["stack"])
    assert value not in stream.getvalue()


def test_every_record_is_one_ascii_line(logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = logger
    log.warning("two\nlines and \u00e9 and \x00")
    assert len(stream.getvalue().splitlines()) == 1
    assert stream.getvalue().isascii()
    assert lines(stream)[0]["message"] == "two\nlines and \u00e9 and \x00"


def test_text_format_for_development() -> None:
    stream = io.StringIO()
    record = logging.LogRecord("piigate.x", logging.WARNING, __file__, 1, "call failed: %s",
                               ("VAULT_UNAVAILABLE",), None)
    record.request_id = "cd" * 16
    handler = logs.handler("text", stream)
    handler.handle(record)
    stamp, rest = stream.getvalue().rstrip("\n").split(" ", 1)
    assert RFC3339_UTC_MS.match(stamp)
    assert rest == f"WARNING piigate.x call failed: VAULT_UNAVAILABLE request_id={'cd' * 16}"


def test_configure_replaces_its_own_handler_only() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        logs.configure("INFO", "json", io.StringIO())
        logs.configure("DEBUG", "text", io.StringIO())
        ours = [h for h in root.handlers if h.get_name() == "piigate"]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, logs.TextFormatter)
        assert [h for h in root.handlers if h not in ours] == before
        assert root.level == logging.DEBUG
    finally:
        for h in [h for h in root.handlers if h.get_name() == "piigate"]:
            root.removeHandler(h)
        root.setLevel(level)


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert logs.rfc3339(0.5) == "1970-01-01T00:00:00.500Z"
    assert logs.rfc3339(1_800_000_000.0429) == "2027-01-15T08:00:00.042Z"
