"""`piigate-dev local-vault`: serve the local Piiano-compatible vault (development only).

    piigate-dev local-vault --listen 127.0.0.1:8123 [--config vault.toml] [--data vault.db]
                        [--audit vault-audit.jsonl]

With only `--listen` it is a working in-memory dev instance with the admin key
`pvaultauth`. Config problems are printed with their key path and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from piigate.transport.addresses import ListenAddress, parse_listen


def _listen(text: str) -> ListenAddress:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the subcommand's flags."""
    parser.add_argument("--listen", required=True, type=_listen, metavar="HOST:PORT",
                        help="address to serve on (port 0: any free port)")  # fmt: skip
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    parser.add_argument("--data", metavar="FILE", help="SQLite data file (default: in memory)")
    parser.add_argument("--audit", metavar="FILE", help="audit log file (default: stderr)")


def run(args: argparse.Namespace) -> int:
    """Load the config, then serve until SIGTERM/SIGINT; 2 when it cannot start."""
    # Heavy imports here, so building the `piigate` parser stays cheap.
    from piigate.transport.http import run_http_app
    from piigate_dev.localvault.app import create_vault_app
    from piigate_dev.localvault.config import load_vault_config
    from piigate_dev.localvault.errors import StartupError

    listen: ListenAddress = args.listen
    try:
        config = load_vault_config(args.config)
        if args.data:
            config = dataclasses.replace(config, data_path=args.data)
        if args.audit:
            config = dataclasses.replace(config, audit_path=args.audit)
        if not listen.is_loopback:
            print(f"warning: the local vault listens on {listen}, beyond loopback; it is a "
                  "development stand-in", file=sys.stderr)  # fmt: skip
        return run_http_app(lambda: create_vault_app(config), listen)
    except StartupError as exc:
        print(f"piigate-dev local-vault: {exc}", file=sys.stderr)
        return 2
