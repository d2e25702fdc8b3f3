"""`piigate audit verify FILE [--expect-last HASH]`: check a chained audit trail.

Exit status: 0 the chain holds (`ok: N events, last hash H`), 1 it is broken
(`broken at line N: what`), 2 the file cannot be read or the arguments are wrong. Each
repair marker in the chain adds a line `repaired at line N: what` after the verdict: the
gateway cut a torn line there, or resumed after writes failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from piigate.audit.verify import read_lines, verify_chain


def _hash_argument(text: str) -> str:
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError("expected 64 hex digits (a SHA-256)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify",
        help="check the hash chain of an audit file",
        description="Check that no line of a chained audit file was edited, deleted, inserted "
        "or reordered. Lines cut off the end cannot be detected without --expect-last.",
    )
    verify.add_argument("file", type=Path, help="the chained JSON-lines audit file")
    verify.add_argument(
        "--expect-last",
        type=_hash_argument,
        metavar="HASH",
        help="the hash the chain must end with (a `last hash` recorded earlier): "
        "catches a truncated or extended tail",
    )


def run(args: argparse.Namespace) -> int:
    if args.audit_command == "verify":
        return _verify(args.file, args.expect_last)
    raise AssertionError(f"unknown audit action {args.audit_command!r}")  # argparse guards


def _verify(path: Path, expect_last: str | None) -> int:
    try:
        with path.open("rb") as stream:
            result = verify_chain(read_lines(stream), expect_last=expect_last)
    except FileNotFoundError:
        print(f"piigate audit verify: {path}: no such file", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"piigate audit verify: {path}: cannot read ({exc.strerror or exc})",
              file=sys.stderr)
        return 2
    if result.ok:
        print(f"ok: {result.lines} events, last hash {result.last_hash}")
    else:
        print(f"broken at line {result.broken_at}: {result.detail}")
    for number, repair in result.repairs:
        print(f"repaired at line {number}: {repair.describe()}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    # `python -m piigate.cli.audit verify FILE` until `audit` is wired into piigate.cli.main.
    _parser = argparse.ArgumentParser(prog="piigate audit", description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
