"""The `piigate-dev` command: the development stand-ins, one subcommand each.

Each subcommand's module exposes `add_arguments(parser)` and `run(args) -> int`; the
gateway's own `piigate` command builds its parser the same way (`piigate.cli.main`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from piigate.cli.main import run_subcommands
from piigate_dev import __version__

# subcommand -> (module, one-line help). A module keeps heavy imports inside run(), and
# only the chosen subcommand's module is imported.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "local-vault": ("piigate_dev.localvault.cli", "run the local Piiano-compatible vault"),
    "dev-issuer": ("piigate_dev.devissuer.cli", "run the development token issuer"),
    "issue-token": ("piigate_dev.devissuer.token_cli", "ask a running dev issuer for a user token"),
    "migrate-user": ("piigate_dev.devissuer.migrate_cli", "move a user's PII into the vault"),
    "demo": ("piigate_dev.demo", "piigate end to end on the stand-ins, then exit"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen subcommand; returns the process exit status."""
    return run_subcommands("piigate-dev", __doc__ or "", SUBCOMMANDS, argv, __version__)


if __name__ == "__main__":
    sys.exit(main())
