"""The chained JSON Lines format: each line names the SHA-256 of the line before it.

A chained line is the event's JSON object with one more member, `prev`: compact (`,` and
`:` separators), keys sorted, ASCII only, exactly as `AuditEvent.to_json` writes it, and
terminated by one `\\n`. Rules:

1. The hash of a line is the lowercase hex SHA-256 of its exact bytes *without* the
   terminating `\\n`; `prev` is part of those bytes, so each line commits to the whole
   history before it.
2. The first line of a chain has `prev` = `GENESIS_HASH`, 64 zeros (no line hashes to it).
3. A line is at most `MAX_LINE_BYTES` long, so its tail can be read back in bounded memory
   and the chain continued across restarts.
4. A repair marker (`"event": "audit_repair"`) is a chained line like any other. It records
   what the writer did to keep the chain whole: cutting a torn final line at start-up (its
   length and SHA-256, never its content, which may hold part of an event), or resuming
   after writes failed (since when, the error, how many events went unrecorded).

What chaining can prove: any edit, deletion, insertion or reordering of lines *before*
the last one breaks a link. What it cannot: cutting lines off the *end* leaves a shorter
valid chain, and so does editing the last line and recomputing nothing else. Against
that, keep the last hash somewhere else and check the trail against it (`piigate.audit.verify`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from piigate import strictjson
from piigate.audit.event import JSON_ENCODER

GENESIS_HASH = "0" * 64
# Audit lines are small (no PII, a bounded field list, adhoc_reason <= 256 chars, purpose
# <= 128); a line longer than this is not one of ours.
MAX_LINE_BYTES = 64 * 1024
REPAIR_EVENT = "audit_repair"

_HASH = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{8,15}\+00:00")
_ERROR = re.compile(r"[A-Za-z0-9_]{1,40}")


def line_hash(line: bytes) -> str:
    """The hash of one line's bytes, without its terminating newline (rule 1)."""
    return hashlib.sha256(line).hexdigest()


def is_hash(text: str) -> bool:
    """Whether `text` is a line hash as the format spells it: 64 lowercase hex digits."""
    return _HASH.fullmatch(text) is not None


def chain_line(event_json: str, prev_hash: str) -> tuple[str, str]:
    """The chained line for `event_json` after a line hashing to `prev_hash`, and its hash.

    `event_json` must be one JSON object without a `prev` member. The line comes without
    its newline.
    """
    if not is_hash(prev_hash):
        raise ValueError("prev_hash must be 64 lowercase hex digits")
    event = json.loads(event_json)
    if not isinstance(event, dict):
        raise ValueError("an audit event must be a JSON object")
    if "prev" in event:
        raise ValueError("an audit event must not carry its own prev")
    line, digest = chain(event, prev_hash)
    return line.decode("ascii"), digest


def chain(event: dict[str, object], prev_hash: str) -> tuple[bytes, str]:
    """The chained line (without newline) for `event` after `prev_hash`, and its hash.
    Adds `prev` to `event` in place."""
    event["prev"] = prev_hash
    line = canonical(event).encode("ascii")
    return line, line_hash(line)


def canonical(event: dict[str, object]) -> str:
    """The format's one serialisation (compact, keys sorted, ASCII only): the same as
    `AuditEvent.to_json`, so chaining adds `prev` and changes nothing else."""
    return JSON_ENCODER.encode(event)


def strip_newline(raw: bytes) -> bytes:
    return raw[:-1] if raw.endswith(b"\n") else raw


def parse_line(line: bytes) -> dict[str, object] | None:
    """The object of a well-formed chained line (its `prev` included); None for anything
    else, including a line that parses but is not in canonical form (so it was not written
    by us). Never raises: the line may be hostile (1,000 `[`, a huge number, bad UTF-8)."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        event = strictjson.loads(line)
        if not isinstance(event, dict):
            return None
        prev = event.get("prev")
        if not isinstance(prev, str) or not is_hash(prev):
            return None
        if canonical(event).encode("ascii") != line:
            return None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return event


def prev_of(line: bytes) -> str | None:
    """The `prev` of a well-formed chained line; None for anything else."""
    event = parse_line(line)
    return None if event is None else str(event["prev"])


def rfc3339(time: float) -> str:
    """A time as audit events write it: RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(time, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Repair:
    """What a repair marker records (rule 4): a torn final line cut at start-up, an outage
    the writer resumed after, or both.

    `torn_bytes` and `torn_sha256` identify the cut bytes (against a backup, say) without
    keeping them. `failed_since` (RFC 3339), `error` (an errno name such as `ENOSPC`) and
    `unrecorded` (events refused meanwhile, each answered AUDIT_UNAVAILABLE) describe an
    outage: the trail has no line for those calls, and none disclosed anything.
    """

    torn_bytes: int = 0
    torn_sha256: str | None = None
    failed_since: str | None = None
    error: str | None = None
    unrecorded: int = 0

    def to_dict(self, time: float) -> dict[str, object]:
        """The marker's members (without `prev`), unset facts left out."""
        data: dict[str, object] = {"event": REPAIR_EVENT, "time": rfc3339(time)}
        if self.torn_sha256 is not None:
            data["torn_bytes"] = self.torn_bytes
            data["torn_sha256"] = self.torn_sha256
        if self.failed_since is not None:
            data["failed_since"] = self.failed_since
            data["unrecorded"] = self.unrecorded
            if self.error is not None:
                data["error"] = self.error
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Repair | None:
        """The repair a parsed line records; None if it is not a repair marker."""
        if data.get("event") != REPAIR_EVENT:
            return None
        # The file may be hostile: keep only what is shaped as the writer writes it, so
        # nothing else (a terminal escape, say) reaches an operator's screen.
        torn_bytes, unrecorded = data.get("torn_bytes", 0), data.get("unrecorded", 0)
        torn_sha256, since, error = (data.get(k) for k in ("torn_sha256", "failed_since", "error"))
        return cls(
            torn_bytes=torn_bytes if type(torn_bytes) is int else 0,
            torn_sha256=torn_sha256 if isinstance(torn_sha256, str) and is_hash(torn_sha256)
            else None,
            failed_since=since if isinstance(since, str) and _TIME.fullmatch(since) else None,
            error=error if isinstance(error, str) and _ERROR.fullmatch(error) else None,
            unrecorded=unrecorded if type(unrecorded) is int else 0,
        )

    def describe(self) -> str:
        """One sentence for an operator, worded to follow "repaired at line N: "."""
        parts = []
        if self.torn_sha256 is not None:
            parts.append(
                f"a torn final line ({self.torn_bytes} bytes, sha256 {self.torn_sha256}) "
                "was cut at start-up"
            )
        if self.failed_since is not None:
            cause = f" ({self.error})" if self.error else ""
            parts.append(
                f"writes failed{cause} from {self.failed_since}; {self.unrecorded} "
                "events went unrecorded (each refused, nothing disclosed)"
            )
        return "; ".join(parts) or "a repair marker without details"
