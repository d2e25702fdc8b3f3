"""One fuzz target per parser of outside input, each a module with:

- `fuzz(data: bytes) -> None`: feed one input to the parser; return on success or on one
  of the parser's documented errors, raise on anything else (a finding);
- `setup(workdir: Path) -> None`, optional: build what the target needs, once (keys are
  generated here, at run time, never checked in);
- `seeds() -> Iterable[bytes]`, optional: extra seed inputs made at run time (tokens
  signed by the fresh key, certificates), added to the checked-in `corpus/NAME/`;
- inputs starting with `*` may be `expand`ed (below) by targets whose parser takes
  inputs large enough for deep nesting or many repeated entries;
- `KNOWN`, optional: exception types of crashes already known and being fixed in the
  parser's own file; tolerated only with `--known-ok` (the suite's short run), reported
  otherwise.

Importing this package imports no parser, so `run.py` can instrument them as they load.
"""

from __future__ import annotations

TARGETS = (
    "jwt",  # tokens.verification.verify (+ tokens.jws): structure, signature, claims
    "jwks",  # tokens.keys.parse_jwks
    "jwks_uri",  # tokens.fetch.check_jwks_uri (from discovery documents)
    "token_claims",  # identity.pii_claim, tokens.claims: values inside verified claims
    "strictjson",  # piigate.strictjson.loads
    "vault_answer",  # vault.client: detokenize answers and error bodies
    "vault_http1",  # vault.http1.AnswerReader: the vault's HTTP/1.1 answers, as bytes
    "smart_scopes",  # policy.smart_scopes
    "config",  # config.load_config (TOML) -> parse_config
    "audit_chain",  # the audit trail verifier
    "peer_names",  # identity.peer: certificate names and selectors
)


class Finding(AssertionError):
    """An oracle's verdict: the parser answered without an error, but wrongly (accepted a
    forgery, handed out an unrequested record, ...)."""


REPEATS = 1000
EXPANDED_MAX_BYTES = 32 * 1024


def expand(data: bytes) -> bytes:
    """`*HEAD`UNIT`TAIL` as HEAD + UNIT * REPEATS + TAIL (at most EXPANDED_MAX_BYTES);
    any other input as it is. (A backtick: no syntax here uses one, seeds stay text.)

    Mutating bytes one at a time, libFuzzer rarely builds a thousand nested brackets or
    issuers, which is where recursion and quadratic work hide; this lets a short input
    stand for a long one.
    """
    if not data.startswith(b"*"):
        return data
    head, _, rest = data[1:].partition(b"`")
    unit, _, tail = rest.partition(b"`")
    repeats = min(REPEATS, EXPANDED_MAX_BYTES // max(1, len(unit)))
    return head + unit * repeats + tail
