"""`piigate-dev dev-issuer`: run the development token issuer until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from piigate.transport.addresses import ListenAddress, parse_listen

if TYPE_CHECKING:
    from piigate_dev.devissuer.config import IssuerConfig

DESCRIPTION = """\
Run the development token issuer: discovery, JWKS, OAuth 2.0 client credentials and a
dev-only endpoint that mints an access token for any user. Never expose it: it refuses a
non-loopback --listen address unless --allow-remote is given, and without --allow-remote
its /dev/* routes answer loopback peers only. Without --config there is one client,
dev-client / dev-secret, allowed any audience and scope.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `dev-issuer` options."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the paragraph as written
    parser.add_argument(
        "--listen",
        required=True,
        metavar="HOST:PORT",
        help="address to bind, e.g. 127.0.0.1:9000 (port 0: any free port)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="TOML config (clients, algorithm, lifetimes, issuer URL)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="DANGEROUS: allow a non-loopback listen address and /dev/* calls from other hosts;"
        " anyone who can reach the issuer can then mint tokens for any user",
    )


def check_listen(listen: ListenAddress, allow_remote: bool) -> str | None:
    """Why `listen` is refused, or None. Only loopback unless remote access is asked for."""
    if listen.is_loopback or allow_remote:
        return None
    return (
        f"refusing to listen on non-loopback address {listen}: the dev issuer mints tokens "
        "for any user; use 127.0.0.1 or pass --allow-remote"
    )


def run(args: argparse.Namespace) -> int:
    """Validate options and config, then serve; exit 2 on a usage or config error."""
    from piigate_dev.devissuer.config import ConfigError, IssuerConfig, load_issuer_config

    try:
        listen = parse_listen(args.listen)
    except ValueError as exc:
        print(f"piigate-dev dev-issuer: --listen: {exc}", file=sys.stderr)
        return 2
    refusal = check_listen(listen, args.allow_remote)
    if refusal is not None:
        print(f"piigate-dev dev-issuer: {refusal}", file=sys.stderr)
        return 2
    try:
        config = load_issuer_config(args.config) if args.config else IssuerConfig()
    except ConfigError as exc:
        print(f"piigate-dev dev-issuer: invalid config {args.config}:", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}", file=sys.stderr)
        return 2
    return _serve(config, listen, args.allow_remote)


def _serve(config: IssuerConfig, listen: ListenAddress, allow_remote: bool) -> int:
    from aiohttp import web

    from piigate.transport.http import run_http_app
    from piigate_dev.devissuer.api import ISSUER_KEY, create_issuer_app

    async def make_app() -> web.Application:
        app = await create_issuer_app(config, allow_remote=allow_remote)
        if listen.port != 0 and config.issuer is None and not _is_wildcard(listen.host):
            # With a fixed port the base URL is known now. With port 0, or a wildcard host
            # that callers reach by another name, the issuer falls back to each request's
            # origin (see `service.DevIssuer`).
            host = f"[{listen.host}]" if ":" in listen.host else listen.host
            app[ISSUER_KEY].bind_base_url(f"http://{host}:{listen.port}")
        return app

    return run_http_app(make_app, listen)


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")  # noqa: S104 - recognising, not binding


if __name__ == "__main__":  # `python -m piigate_dev.devissuer.cli --listen ...`
    _parser = argparse.ArgumentParser(prog="piigate-dev dev-issuer")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
