"""The `piigate` command: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only wires them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, one-line help). A module keeps heavy imports inside run(), so
# building the parser stays cheap.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("piigate.serve", "run the gRPC gateway"),
    "check-config": ("piigate.config_cli", "validate a gateway config file and exit"),
    "audit": ("piigate.audit_cli", "verify a hash-chained audit trail"),
    "explain": ("piigate.explain", "what the gateway would decide, without calling the vault"),
    "local-vault": ("piigate.localvault.cli", "run the local Piiano-compatible vault (dev)"),
    "dev-issuer": ("piigate.devissuer.cli", "run the development token issuer (development)"),
    "issue-token": ("piigate.devissuer.token_cli", "ask a running dev issuer for a user token"),
    "migrate-user": ("piigate.devissuer.migrate_cli", "move a legacy user's PII into the vault"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="piigate", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
