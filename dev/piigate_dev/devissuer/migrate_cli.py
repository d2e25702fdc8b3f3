"""`piigate-dev migrate-user`: store a legacy user's record in the vault, print the new token.

Prints `{"subject", "token_id", "access_token"}` as JSON. The record's values are read
from a file (never from the command line, where `ps` would show them) and never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from piigate_dev.devissuer.migration import MigratedUser, VaultTarget


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `migrate-user` options."""
    parser.add_argument("--vault", required=True, metavar="URL", help="the vault's base URL")
    parser.add_argument(
        "--vault-key-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the vault API key (keys never go on the command line)",
    )
    parser.add_argument("--collection", required=True, metavar="NAME", help="vault collection")
    parser.add_argument("--issuer", required=True, metavar="URL", help="the dev issuer's base URL")
    parser.add_argument("--sub", required=True, help="the user's subject (sub claim)")
    parser.add_argument(
        "--audience", required=True, action="append", metavar="A", help="audience; repeatable"
    )
    parser.add_argument("--scope", required=True, help="space-separated scopes for the token")
    parser.add_argument(
        "--record-file", required=True, metavar="FILE.json", help="the user's record: a JSON object"
    )
    parser.add_argument("--reason", default="AccountManagement", help="vault access reason")
    parser.add_argument(
        "--no-bind", action="store_true", help="do not tag the vault token with the user binding"
    )
    parser.add_argument(
        "--binding-key-env", metavar="VAR",
        help="environment variable holding a key for the binding tag's HMAC (optional)",
    )
    parser.add_argument(
        "--fhir-patient-id", metavar="ID",
        help="also tag the vault token as this FHIR Patient (for launch_patient profiles)",
    )
    parser.add_argument(
        "--fhir-base", metavar="URL",
        help="the FHIR server the Patient id belongs to (default: the issuer's iss); "
        "the gateway profile's fhir_base must match",
    )


def run(args: argparse.Namespace) -> int:
    """Migrate one user; exit 2 on a usage error, 1 when the vault or issuer fails."""
    from piigate.identity.launch import FHIR_ID
    from piigate_dev.devissuer.migration import REASONS, VaultCallFailed, VaultTarget
    from piigate_dev.devissuer.remote import IssuerCallFailed

    api_key = os.environ.get(args.vault_key_env)
    if not api_key:
        return _usage(f"--vault-key-env: environment variable {args.vault_key_env} is unset")
    if args.reason not in REASONS or args.reason == "Other":
        return _usage("--reason: must be a Piiano reason other than Other")
    if args.fhir_patient_id is not None and not FHIR_ID.fullmatch(args.fhir_patient_id):
        return _usage("--fhir-patient-id: a FHIR id is 1-64 of A-Z a-z 0-9 - .")
    if args.fhir_base is not None and args.fhir_patient_id is None:
        return _usage("--fhir-base: only with --fhir-patient-id")
    try:
        record = json.loads(Path(args.record_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return _usage(f"--record-file: cannot read {args.record_file!r}: {exc}")
    except ValueError:  # the decode error would quote the record: say only where
        return _usage(f"--record-file: {args.record_file!r} is not valid JSON")
    if not isinstance(record, dict) or not record:
        return _usage("--record-file: must hold a non-empty JSON object")

    vault = VaultTarget(args.vault, api_key, args.collection)
    try:
        migrated = _migrate(args, vault, record)
    except (VaultCallFailed, IssuerCallFailed) as exc:
        print(f"piigate-dev migrate-user: {exc}", file=sys.stderr)
        return 1
    answer = {
        "subject": migrated.subject,
        "token_id": migrated.token_id,
        "access_token": migrated.access_token,
    }
    print(json.dumps(answer))
    return 0


def _migrate(
    args: argparse.Namespace, vault: VaultTarget, record: dict[str, object]
) -> MigratedUser:
    import asyncio

    import aiohttp

    from piigate_dev.devissuer.migration import migrate_user

    audience: list[str] = args.audience
    binding_key = (os.environ.get(args.binding_key_env, "").encode() or None
                   if args.binding_key_env else None)

    async def go() -> MigratedUser:
        async with aiohttp.ClientSession() as http:
            return await migrate_user(
                http,
                vault,
                args.issuer,
                record,
                subject=args.sub,
                audience=audience[0] if len(audience) == 1 else audience,
                scope=args.scope,
                reason=args.reason,
                bind=not args.no_bind,
                binding_key=binding_key,
                fhir_patient_id=args.fhir_patient_id,
                fhir_base=args.fhir_base,
            )

    return asyncio.run(go())


def _usage(message: str) -> int:
    print(f"piigate-dev migrate-user: {message}", file=sys.stderr)
    return 2
