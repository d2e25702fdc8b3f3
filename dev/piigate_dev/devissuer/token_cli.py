"""`piigate-dev issue-token`: ask a running dev issuer for a user's access token (a JWT,
or with `--opaque` an opaque token it answers for at `/introspect`), print it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from piigate_dev.devissuer.claims import UserTokenRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the `issue-token` options."""
    parser.add_argument("--issuer", required=True, metavar="URL", help="the dev issuer's base URL")
    parser.add_argument("--sub", required=True, help="the user's subject (sub claim)")
    parser.add_argument("--pii-token", metavar="T", help="vault token id for the pii claim")
    parser.add_argument(
        "--audience",
        action="append",
        metavar="A",
        help="audience; repeat for a list (one: a string aud, none: no aud claim)",
    )
    parser.add_argument("--scope", help="space-separated scopes")
    parser.add_argument("--azp", help="authorized party (the client id the user logged in to)")
    parser.add_argument("--typ", choices=("at+jwt", "JWT"), default="at+jwt", help="header typ")
    parser.add_argument("--lifetime-s", type=int, metavar="N", help="token lifetime in seconds")
    parser.add_argument("--patient", metavar="ID",
                        help="SMART launch context: the `patient` claim (a FHIR Patient id)")
    parser.add_argument("--fhir-user", metavar="REF",
                        help="SMART: the `fhirUser` claim, e.g. Practitioner/123")
    parser.add_argument("--permission", action="append", default=[], metavar="P",
                        help="an entry of the `permissions` claim (Auth0 RBAC); repeatable")
    parser.add_argument("--acr", help="the login's `acr` claim")
    parser.add_argument("--auth-age-s", type=int, metavar="N",
                        help="the login happened N seconds ago (`auth_time` = now - N)")
    parser.add_argument("--opaque", action="store_true",
                        help="an opaque token (checked by RFC 7662 introspection), not a JWT")


def run(args: argparse.Namespace) -> int:
    """Print only the token on stdout; errors go to stderr with exit status 1."""
    import asyncio
    import time

    from piigate_dev.devissuer.claims import UserTokenRequest, extra_claims
    from piigate_dev.devissuer.remote import IssuerCallFailed

    audience = args.audience or None
    request = UserTokenRequest(
        sub=args.sub,
        pii_token=args.pii_token,
        audience=audience[0] if audience and len(audience) == 1 else _tuple(audience),
        scope=args.scope,
        azp=args.azp,
        lifetime_s=args.lifetime_s,
        typ=args.typ,
        claims=extra_claims(
            patient=args.patient, fhir_user=args.fhir_user, permissions=tuple(args.permission),
            acr=args.acr,
            auth_time=int(time.time()) - args.auth_age_s if args.auth_age_s is not None else None,
        ),
    )
    try:
        token = asyncio.run(_issue(args.issuer, request, args.opaque))
    except IssuerCallFailed as exc:
        print(f"piigate-dev issue-token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


async def _issue(issuer_url: str, request: UserTokenRequest, opaque: bool) -> str:
    import aiohttp

    from piigate_dev.devissuer.remote import RemoteIssuer

    async with aiohttp.ClientSession() as http:
        issuer = RemoteIssuer(http, issuer_url)
        return await (issuer.opaque_user_token if opaque else issuer.user_token)(request)
