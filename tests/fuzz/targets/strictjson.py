"""piigate.strictjson.loads on hostile bytes.

Documented errors: ValueError (DuplicateMember, UnicodeDecodeError and malformed JSON
among them). Oracle: whatever it accepts, the standard library reads the same way.
"""

from __future__ import annotations

import json

from piigate import strictjson
from tests.fuzz.targets import Finding, expand


def fuzz(data: bytes) -> None:
    data = expand(data)
    try:
        value = strictjson.loads(data)
    except ValueError:
        return
    if value != json.loads(data.decode("utf-8")):
        raise Finding("strictjson and json read the same document differently")
    if data[:1] in (b"\xef", b"\xfe", b"\xff"):
        raise Finding("a document with a byte order mark was accepted")
