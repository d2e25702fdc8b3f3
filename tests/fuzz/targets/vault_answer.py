"""vault.client's readers of what the vault sends back: detokenize answers and error bodies.

Input: the first byte picks the reader, the rest is the body. Byte 0 even: the answer
to a detokenize of `ASKED`; odd: an error body after a status, three digits (`403`) or
any three bytes. The body may be `expand`ed.

Documented errors: `VaultResponseInvalid` for answers; the error reader never raises and
returns one of the vault GatewayErrors. Oracles: an answer never holds a record that was
not asked for; an error's metadata never carries anything from the body but a Piiano
error code (PV and digits).
"""

from __future__ import annotations

import re

from piigate.errors import GatewayError, VaultResponseInvalid
from piigate.vault import client
from tests.fuzz.targets import Finding, expand

ASKED = frozenset({"tok-1", "tok-2", "7b0f3c5e-0000-4000-8000-000000000000"})
_SAFE_METADATA = {
    "vault_status": re.compile(r"[0-9]{1,5}"),
    "vault_error_code": re.compile(r"PV[0-9]{1,6}"),
}


def fuzz(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        _answer(expand(data[1:]))
    else:
        head = data[1:4]
        status = int(head) if head.isdigit() else sum(head) % 600
        _error(status, expand(data[4:]))


def _answer(body: bytes) -> None:
    try:
        fields = client._parse_answer(body, set(ASKED))
    except VaultResponseInvalid:
        return
    if not fields.keys() <= ASKED:
        raise Finding("an answer handed out a record that was not asked for")
    if not all(isinstance(value, dict) for value in fields.values()):
        raise Finding("a record's fields are not an object")


def _error(status: int, body: bytes) -> None:
    error = client._status_error(status, body)
    if not isinstance(error, GatewayError):
        raise Finding(f"the error for {status} is not a GatewayError: {error!r}")
    for name, value in error.metadata.items():
        pattern = _SAFE_METADATA.get(name)
        if pattern is None or not pattern.fullmatch(value):
            raise Finding(f"error metadata {name}={value!r} may carry the vault's body")
