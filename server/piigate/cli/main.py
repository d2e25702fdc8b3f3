"""The `piigate` command: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the job and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only wires them. Only the
chosen subcommand's module is imported, so `piigate --help` and a parser error stay cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

from piigate import __version__

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("piigate.cli.serve", "run the gRPC gateway"),
    "check-config": ("piigate.cli.check_config", "validate a gateway config file and exit"),
    "explain": ("piigate.cli.explain", "what the gateway would decide, without calling the vault"),
    "audit": ("piigate.cli.audit", "verify a hash-chained audit trail"),
}


def run_subcommands(
    prog: str,
    description: str,
    subcommands: Mapping[str, tuple[str, str]],
    argv: Sequence[str] | None,
    version: str,
) -> int:
    """Choose the subcommand from `argv`, build only its parser, and run it."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description=description.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    parser.add_argument("command", choices=list(subcommands), metavar="COMMAND",
                        help=", ".join(f"{n}: {h}" for n, (_, h) in subcommands.items()))
    if not args or args[0] not in subcommands:
        parser.parse_args(args[:1])  # prints usage, the version or the error, and exits
        return 2  # pragma: no cover
    name = args[0]
    module_name, help_text = subcommands[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"{prog} {name}", description=help_text)
    module.add_arguments(sub)
    parsed = sub.parse_args(args[1:])
    try:
        status: int = module.run(parsed)
    except KeyboardInterrupt:
        return 130
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; returns the process exit status."""
    return run_subcommands("piigate", __doc__ or "", SUBCOMMANDS, argv, __version__)


if __name__ == "__main__":
    sys.exit(main())
