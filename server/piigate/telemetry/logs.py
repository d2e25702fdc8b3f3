"""The log format: one JSON object per line on stderr (or human text in development).

    {"time":"2026-03-01T09:14:07.221Z","level":"INFO","logger":"piigate.audit.recorder",
     "message":"call denied: TOKEN_EXPIRED","request_id":"5f0c…","caller":"support-tool",
     "profile":"support","outcome":"denied","error_reason":"TOKEN_EXPIRED"}

(one line in the log; wrapped here). Every line has `time` (RFC 3339, UTC, milliseconds),
`level`, `logger` and `message`; a line about one call adds whichever of `request_id`,
`batch_id`, `caller`, `profile`, `outcome` and `error_reason` it knows, passed by the code
that logs it as `extra=`. Only those names are ever copied from a record: a field nobody
listed here cannot reach the log by accident.

An exception is shown by its type and its stack (file, line, function, source line),
never by its text, in both formats: the text of an exception raised on a request's path
could hold a value or a token (the message of every piigate log call holds only codes
and configuration names).

Hand-written on the standard library rather than python-json-logger: the two things
that matter here, the closed list of fields and the exception without its text, are the
formatter's whole body, so a dependency would bring options to turn off rather than code
to reuse. Formatting happens only for records that pass the level: callers on the request
path check `isEnabledFor` before building their `extra`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]
# The request-scoped facts a line may carry, in the order they are written.
CONTEXT_FIELDS = ("request_id", "batch_id", "caller", "profile", "outcome", "error_reason")
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # ASCII only: one line, whatever it holds


def rfc3339(created: float) -> str:
    """`created` (seconds since the epoch) as RFC 3339 UTC with milliseconds."""
    millis = int(created * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{millis:03d}Z"


def _exception(record: logging.LogRecord) -> dict[str, str]:
    if not record.exc_info or record.exc_info[0] is None:
        return {}
    kind, _, tb = record.exc_info
    return {"error_type": kind.__name__, "stack": "".join(traceback.format_tb(tb)).rstrip()}


class JsonFormatter(logging.Formatter):
    """One compact JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        data.update(_exception(record))
        return _ENCODER.encode(data)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER MESSAGE key=value ...`, for a developer's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [rfc3339(record.created), record.levelname, record.name, record.getMessage()]
        parts += [f"{name}={record.__dict__[name]}" for name in CONTEXT_FIELDS
                  if record.__dict__.get(name) is not None]
        line = " ".join(parts)
        exc = _exception(record)
        if exc:
            line += f"\n{exc['error_type']} (text withheld)\n{exc['stack']}"
        return line


def handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing `log_format` lines to `stream` (stderr by default)."""
    out = logging.StreamHandler(stream if stream is not None else sys.stderr)
    out.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    out.set_name("piigate")
    return out


def configure(level: str | int, log_format: LogFormat, stream: TextIO | None = None) -> None:
    """The process's logging: the root logger at `level`, one handler in `log_format`
    (replacing one an earlier call installed, so the config file can change the format
    chosen before it was read)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "piigate"]:
        root.removeHandler(old)
    root.addHandler(handler(log_format, stream))
    root.setLevel(level)
