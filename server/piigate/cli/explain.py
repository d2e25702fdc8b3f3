"""`piigate explain`: what the gateway would decide for a caller and a subject token (or,
for an `on_behalf_of` profile, an agent's token and the customer it names), check by
check and field by field, without calling the vault.

    piigate explain --config piigate.toml --caller support-tool --subject-token-file t.jwt
    piigate explain --config piigate.toml --caller support-console \
        --actor-token-file agent.jwt --subject-issuer auth0 --subject 'auth0|123' \
        --purpose 'TICKET-4711'

It is how an operator tests a profile change before shipping it. The subject token is
verified for real (its issuer's keys are fetched), and the decision is the gateway's own
code: the caller's profile (`ProfileIndex.select`) and the pipeline's decision sequence
(`piigate.identity.resolution.SubjectDecider`), run with a report so that every check is recorded
rather than stopping at the first refusal. Only the abuse limits, the vault call (and so
whether a named subject or launch patient has a record) and the audit event are left
out. Output names claims, checks, profiles and fields, never a token
or a claim's value beyond the subject and issuer. Exit status: 0 would be allowed, 1 would
be denied, 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from piigate.audit.event import AuditFacts
from piigate.cli.check_config import load_or_report
from piigate.config import GatewayConfig, Profile
from piigate.errors import GatewayError, StepUpRequired
from piigate.identity.caller import Caller
from piigate.identity.peer import PeerIdentity
from piigate.identity.resolution import Item, SubjectDecider, SubjectRef
from piigate.policy.decision import Check, Checks, DisclosureRequest
from piigate.policy.profiles import ProfileIndex
from piigate.tokens.verifier import TokenVerifier

_LABELS = {"raw": "raw", "mask": "masked", "redact": "redacted"}


@dataclass
class Report:
    """Every check with its verdict, and each field's disclosure."""

    checks: list[Check] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # name, outcome, why

    @property
    def denied_by(self) -> str | None:
        """The reason of the first refusal: the one the gateway would answer with."""
        return next((c.refusal.reason for c in self.checks if c.refusal is not None), None)

    def render(self) -> str:
        lines = [f"  {_line(c)}" for c in self.checks]
        if self.fields:
            width = max(len(name) for name, _, _ in self.fields)
            lines.append("fields")
            lines += [f"  {name:<{width}}  {outcome:<9} {why}"
                      for name, outcome, why in self.fields]
        verdict = "ALLOWED" if self.denied_by is None else f"DENIED ({self.denied_by})"
        lines.append(f"verdict: would be {verdict}")
        return "\n".join(lines)


def _line(check: Check) -> str:
    if check.refusal is None:
        return f"PASS  {check.label}" + (f" ({check.detail})" if check.detail else "")
    shown = {k: v for k, v in check.refusal.metadata.items() if k != "token_role"}
    meta = f" ({', '.join(f'{k}={v}' for k, v in sorted(shown.items()))})" if shown else ""
    return f"FAIL  {check.label}: {check.refusal.reason}{meta}"


async def explain(
    config: GatewayConfig,
    caller: Caller,
    item: Item | str,
    request: DisclosureRequest,
    now: float,
    verifier: TokenVerifier,
) -> Report:
    """The report for `caller` presenting `item` (a subject token, or an `Item` naming
    its subject and actor) with `request`."""
    report = Report()
    try:
        profile = ProfileIndex(config.profiles).select(caller)
    except GatewayError as exc:
        report.checks.append(Check("caller has a profile", exc))
        return report
    report.checks.append(Check(f"caller has a profile: {profile.name}"))
    checks = Checks(report.checks)
    decider = SubjectDecider(verifier, {i.name: i for i in config.issuers})
    try:
        await decider.decide(profile, item, request, now, AuditFacts("explain", now), checks)
    except GatewayError as exc:
        if not any(c.refusal is exc for c in report.checks):  # the token itself failed
            role = "actor" if profile.subject_resolution == "on_behalf_of" else "subject"
            report.checks.append(Check(f"{role} token verified", exc))
            return report
    _name_the_reason(report, profile, request)
    _explain_fields(report, profile, request, checks)
    if profile.one_time_tokens:
        report.checks.append(Check("one-time token: a second use of this jti is refused"))
    return report


def _name_the_reason(report: Report, profile: Profile, request: DisclosureRequest) -> None:
    for i, check in enumerate(report.checks):
        if check.label == "reason allowed" and check.refusal is None:
            reason = request.reason or profile.default_reason
            report.checks[i] = Check(f"reason allowed: {reason}")


def _explain_fields(
    report: Report, profile: Profile, request: DisclosureRequest, checks: Checks
) -> None:
    planned = dict(checks.planned)
    refused = next((c.refusal.metadata.get("field") for c in report.checks
                    if isinstance(c.refusal, StepUpRequired)), None)
    for name in profile.fields:
        if name == refused:
            report.fields.append((name, "withheld", f"step-up unmet "
                                  f"({_unmet(report)}): call refused"))
        elif name not in planned:
            report.fields.append((name, "withheld", "not requested"))
        else:
            report.fields.append(_why(name, planned[name], checks.notes.get(name),
                                      name in profile.step_up))
    for name in request.fields:
        if name not in profile.fields:
            report.fields.append((name, "withheld", "not in the profile"))


def _unmet(report: Report) -> str:
    """Which step-up condition the refused field did not meet."""
    return next((c.refusal.metadata.get("unmet", "?") for c in report.checks
                 if isinstance(c.refusal, StepUpRequired)), "?")


def _why(name: str, disposition: str, note: str | None, stepped: bool) -> tuple[str, str, str]:
    if note is not None:  # step_up_unmet:<condition>
        unmet = note.partition(":")[2]
        return name, _LABELS[disposition], f"step-up unmet ({unmet}): falls back to {disposition}"
    why = {"raw": "profile discloses it raw" + (" (step-up met)" if stepped else ""),
           "mask": f"vault transformation {name}.mask",
           "redact": "profile redacts it; not read from the vault"}[disposition]
    return name, _LABELS[disposition], why


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="gateway TOML config")
    parser.add_argument("--caller", required=True, help="the caller's client id")
    parser.add_argument("--peer", help="the caller's SPIFFE ID (mTLS), if it has one")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--subject-token", help="the end user's (or practitioner's) token")
    token.add_argument("--subject-token-file", type=Path, help="a file holding it")
    actor = parser.add_mutually_exclusive_group()
    actor.add_argument("--actor-token", help="on_behalf_of: the agent's own access token")
    actor.add_argument("--actor-token-file", type=Path, help="a file holding it")
    parser.add_argument("--subject-issuer", metavar="NAME",
                        help="on_behalf_of: the customer's issuer (its configured name)")
    parser.add_argument("--subject", metavar="SUB", help="on_behalf_of: the customer's sub")
    parser.add_argument("--purpose", default="", help="the call's purpose (a ticket reference)")
    parser.add_argument("--patient", default="", help="SMART: the FHIR Patient id in context")
    parser.add_argument("--field", action="append", default=[], dest="fields",
                        help="a field to ask for; repeat (default: all the profile allows)")
    parser.add_argument("--reason", help="Piiano reason (default: the profile's)")
    parser.add_argument("--adhoc-reason", default="", help="free text, with --reason Other")


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return 2
    token = _token(args.subject_token, args.subject_token_file)
    actor = _token(args.actor_token, args.actor_token_file)
    if not token and not actor:
        print("piigate explain: give --subject-token(-file) or --actor-token(-file)",
              file=sys.stderr)
        return 2
    named = (SubjectRef(args.subject_issuer or "", args.subject or "")
             if args.subject_issuer is not None or args.subject is not None else None)
    peer = (PeerIdentity(spiffe_id=args.peer, uri_sans=(args.peer,), dns_sans=())
            if args.peer else None)
    caller = Caller(args.caller, None, peer)
    request = DisclosureRequest(tuple(args.fields), args.reason, args.adhoc_reason,
                                args.purpose, args.patient)
    report = asyncio.run(_explain(config, caller, Item(token, named, actor), request))
    print(f"explain: caller {args.caller}" + (f" ({args.peer})" if args.peer else ""))
    print(report.render())
    return 0 if report.denied_by is None else 1


def _token(text: str | None, path: Path | None) -> str:
    if text is not None:
        return text
    return path.read_text().strip() if path is not None else ""


async def _explain(
    config: GatewayConfig, caller: Caller, token: Item, request: DisclosureRequest
) -> Report:
    from piigate.bootstrap import issuer_source, token_verifier

    async with aiohttp.ClientSession() as session:
        sources = {i.name: issuer_source(i, session, time.time, config.proxies)
                   for i in config.issuers}
        verifier = token_verifier(config.issuers, sources, time.time)
        try:
            return await explain(config, caller, token, request, time.time(), verifier)
        finally:
            for source in sources.values():
                await source.aclose()
