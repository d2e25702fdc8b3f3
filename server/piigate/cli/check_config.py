"""`piigate check-config FILE`: validate a gateway config and exit (0 valid, 2 invalid)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from piigate.config import ConfigError, GatewayConfig, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the gateway's TOML config file")


def load_or_report(path: Path) -> GatewayConfig | None:
    """The config at `path`, or None after printing every problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    print(
        f"{args.config}: valid ({len(config.issuers)} issuer(s), {len(config.profiles)} profile(s))"
    )
    return 0
