"""`piigate explain`: what the gateway would decide for a caller and a subject token,
check by check and field by field, without calling the vault.

    piigate explain --config piigate.toml --caller support-tool --subject-token-file t.jwt

It is how an operator tests a profile change before shipping it. The subject token is
verified for real (its issuer's keys are fetched), with the same stages and the same pure
decision functions the gateway runs; only the vault call and the audit event are left out.
Output names claims, checks, profiles and fields, never a token or a claim's value beyond
the subject and issuer. Exit status: 0 would be allowed, 1 would be denied, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from piigate.cli.check_config import load_or_report
from piigate.config import GatewayConfig, Profile
from piigate.errors import GatewayError
from piigate.identity.caller import Caller
from piigate.identity.peer import PeerIdentity
from piigate.identity.pii_claim import pii_token_id
from piigate.identity.subject import refuse_denied_claims, verify_subject
from piigate.policy.decision import (
    DisclosureRequest,
    SubjectFacts,
    check_adhoc_reason,
    check_audience,
    check_launch,
    check_scopes,
    choose_fields,
    choose_reason,
    unmet_step_up,
)
from piigate.policy.profiles import ProfileIndex
from piigate.tokens.claims import claim_values, granted_scopes
from piigate.tokens.verifier import TokenVerifier

_LABELS = {"raw": "raw", "mask": "masked", "redact": "redacted"}


@dataclass
class Report:
    """Every check with its verdict, and each field's disclosure."""

    checks: list[tuple[bool, str]] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # name, outcome, why
    denied_by: str | None = None

    def check(self, label: str, run: Callable[[], object]) -> object | None:
        """Run one check; record PASS or FAIL with the error's reason."""
        try:
            result = run()
        except GatewayError as exc:
            self.fail(f"{label}: {exc.reason}{_meta(exc)}", exc.reason)
            return None
        self.checks.append((True, label))
        return result

    def fail(self, text: str, reason: str) -> None:
        self.checks.append((False, text))
        self.denied_by = self.denied_by or reason

    def render(self) -> str:
        lines = [f"  {'PASS' if ok else 'FAIL'}  {text}" for ok, text in self.checks]
        if self.fields:
            width = max(len(name) for name, _, _ in self.fields)
            lines.append("fields")
            lines += [f"  {name:<{width}}  {outcome:<9} {why}"
                      for name, outcome, why in self.fields]
        verdict = "ALLOWED" if self.denied_by is None else f"DENIED ({self.denied_by})"
        lines.append(f"verdict: would be {verdict}")
        return "\n".join(lines)


def _meta(exc: GatewayError) -> str:
    shown = {k: v for k, v in exc.metadata.items() if k != "token_role"}
    return f" ({', '.join(f'{k}={v}' for k, v in sorted(shown.items()))})" if shown else ""


async def explain(
    config: GatewayConfig,
    caller: Caller,
    subject_token: str,
    request: DisclosureRequest,
    now: float,
    verifier: TokenVerifier,
) -> Report:
    """The report for `caller` presenting `subject_token` with `request`."""
    report = Report()
    profile = report.check("caller has a profile", lambda: ProfileIndex(
        config.profiles).select(caller))
    if not isinstance(profile, Profile):
        return report
    report.checks[-1] = (True, f"caller has a profile: {profile.name}")
    try:
        subject = await verify_subject(verifier, subject_token)
    except GatewayError as exc:
        report.fail(f"subject token verified: {exc.reason}{_meta(exc)}", exc.reason)
        return report
    issuer = next(i for i in config.issuers if i.name == subject.issuer_name)
    report.checks.append((True, f"subject token verified (issuer {issuer.name}, sub "
                                f"{subject.subject})"))
    report.check("no deny-listed claims", lambda: refuse_denied_claims(
        subject.claims, issuer.denied_claims))
    report.check("vault token claim present", lambda: pii_token_id(
        subject.claims, issuer.pii_token_claim))
    facts = SubjectFacts(claim_values(subject.claims, issuer.audience_claims),
                         granted_scopes(subject.claims, issuer.scope_claims), subject.claims)
    report.check("audience accepted", lambda: check_audience(profile, facts))
    report.check("required scopes granted", lambda: check_scopes(profile, facts))
    report.check("launch context", lambda: check_launch(profile, facts))
    reason = report.check("reason allowed", lambda: choose_reason(profile, request))
    if isinstance(reason, str):
        report.checks[-1] = (True, f"reason allowed: {reason}")
        report.check("adhoc reason", lambda: check_adhoc_reason(reason, request.adhoc_reason))
    report.check("fields within the profile", lambda: choose_fields(profile, request.fields))
    _explain_fields(report, profile, request, reason if isinstance(reason, str) else None,
                    facts, now)
    if profile.one_time_tokens:
        report.checks.append((True, "one-time token: a second use of this jti is refused"))
    return report


def _explain_fields(
    report: Report, profile: Profile, request: DisclosureRequest, reason: str | None,
    facts: SubjectFacts, now: float,
) -> None:
    wanted = set(request.fields)
    for name, disposition in profile.fields.items():
        if wanted and name not in wanted:
            report.fields.append((name, "withheld", "not requested"))
            continue
        rule = profile.step_up.get(name)
        unmet = unmet_step_up(rule, reason or "", facts.claims, now) if rule else None
        if rule is None or unmet is None:
            why = {"raw": "profile discloses it raw" + (" (step-up met)" if rule else ""),
                   "mask": f"vault transformation {name}.mask",
                   "redact": "profile redacts it; not read from the vault"}[disposition]
            report.fields.append((name, _LABELS[disposition], why))
        elif rule.otherwise == "refuse":
            report.fields.append((name, "withheld", f"step-up unmet ({unmet}): call refused"))
            report.denied_by = report.denied_by or "STEP_UP_REQUIRED"
        else:
            report.fields.append((name, _LABELS[rule.otherwise],
                                  f"step-up unmet ({unmet}): falls back to {rule.otherwise}"))
    for name in sorted(wanted - set(profile.fields)):
        report.fields.append((name, "withheld", "not in the profile"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML config")
    parser.add_argument("--caller", required=True, help="the caller's client id")
    parser.add_argument("--peer", help="the caller's SPIFFE ID (mTLS), if it has one")
    token = parser.add_mutually_exclusive_group(required=True)
    token.add_argument("--subject-token", help="the end user's access token")
    token.add_argument("--subject-token-file", type=Path, help="a file holding it")
    parser.add_argument("--field", action="append", default=[], dest="fields",
                        help="a field to ask for; repeat (default: all the profile allows)")
    parser.add_argument("--reason", help="Piiano reason (default: the profile's)")
    parser.add_argument("--adhoc-reason", default="", help="free text, with --reason Other")


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    token = (args.subject_token if args.subject_token is not None
             else args.subject_token_file.read_text().strip())
    peer = (PeerIdentity(spiffe_id=args.peer, uri_sans=(args.peer,), dns_sans=())
            if args.peer else None)
    caller = Caller(args.caller, None, peer)
    request = DisclosureRequest(tuple(args.fields), args.reason, args.adhoc_reason)
    report = asyncio.run(_explain(config, caller, token, request))
    print(f"explain: caller {args.caller}" + (f" ({args.peer})" if args.peer else ""))
    print(report.render())
    return 0 if report.denied_by is None else 1


async def _explain(
    config: GatewayConfig, caller: Caller, token: str, request: DisclosureRequest
) -> Report:
    from piigate.bootstrap import issuer_policy, key_source

    async with aiohttp.ClientSession() as session:
        sources = {i.name: key_source(i, session, time.time) for i in config.issuers}
        verifier = TokenVerifier(
            {i.issuer: (issuer_policy(i), sources[i.name]) for i in config.issuers}, time.time
        )
        try:
            return await explain(config, caller, token, request, time.time(), verifier)
        finally:
            for source in sources.values():
                await source.aclose()
