"""`python -m examples.smart_on_fhir` (`make example-smart`): start the example, walk
through both kinds of SMART app, print what each got, and exit 0 only if every answer
was the one the profiles promise. `--serve` then keeps it running for your own app.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from examples.smart_on_fhir import smart_app
from examples.smart_on_fhir.stack import (
    CLINICIAN_APP,
    PATIENT_PORTAL,
    PRACTITIONER,
    SmartStack,
    running_smart_stack,
)
from piigate_dev.demo import PEOPLE

USER_IDS = {person: str(record["user_id"]) for person, record in PEOPLE}


@dataclass(frozen=True)
class Read:
    """One `GET /Patient/{id}` the walk-through makes, and what it must get."""

    patient_id: str
    status: int
    user_id: str | None = None  # the identifier value a 200 must carry


async def walk_through(stack: SmartStack, out: list[str]) -> bool:
    """Both launches and their reads; appends what happened to `out`; True if every
    answer was as expected."""
    alice, bob = stack.users["alice"], stack.users["bob"]
    ok = True
    async with aiohttp.ClientSession() as http:
        out.append(f"1. patient portal: alice logs in (standalone launch, "
                   f"{' '.join(sorted(PATIENT_PORTAL.scopes))})")
        portal = await smart_app.launch(
            http, stack.fhir_base, PATIENT_PORTAL, login_hint="alice",
            scope="openid fhirUser launch/patient patient/Patient.rs")
        out.append(f"   token: scope {portal.scope!r}, patient {portal.patient}")
        ok &= await _reads(http, stack, portal.access_token, out, [
            Read(alice.fhir_id, 200, USER_IDS["alice"]), Read(bob.fhir_id, 403)])

        launch = await smart_app.ehr_launch(http, stack.authz_base, bob.fhir_id)
        out.append(f"2. clinician app: {PRACTITIONER.username} opens {bob.fhir_id}'s chart "
                   "(EHR launch)")
        clinician = await smart_app.launch(
            http, stack.fhir_base, CLINICIAN_APP, login_hint=PRACTITIONER.username,
            scope="openid fhirUser launch user/Patient.rs", launch=launch)
        out.append(f"   token: scope {clinician.scope!r}, patient {clinician.patient}")
        ok &= await _reads(http, stack, clinician.access_token, out, [
            Read(bob.fhir_id, 200, USER_IDS["bob"]), Read(alice.fhir_id, 403)])
    out.append("piigate's audit trail:")
    for event in stack.audit_events():
        acting = f", actor {event['actor_sub']}" if event.get("actor_sub") else ""
        refused = f" {event['error_reason']}" if event.get("error_reason") else ""
        subject = event.get("subject_sub") or "not resolved"
        out.append(f"   {event.get('profile')}: {event.get('outcome')}{refused} (subject "
                   f"{subject}{acting})")
    return ok


async def _reads(http: aiohttp.ClientSession, stack: SmartStack, token: str, out: list[str],
                 reads: Sequence[Read]) -> bool:
    ok = True
    for read in reads:
        status, body = await smart_app.read_patient(http, stack.fhir_base, read.patient_id,
                                                    token)
        if status == 200:
            identifier = body["identifier"][0]["value"]
            shown = f"Patient/{body['id']}, identifier {identifier}"
            right = identifier == read.user_id
        else:
            shown = f"{body['resourceType']}: {body['issue'][0]['diagnostics']}"
            right = True
        right &= status == read.status
        out.append(f"   GET /Patient/{read.patient_id} -> {status} {shown}"
                   + ("" if right else f"   (expected {read.status})"))
        ok &= right
    return ok


async def amain(serve: bool) -> int:
    async with running_smart_stack() as stack:
        print(f"FHIR base {stack.fhir_base}   SMART authorization {stack.authz_base}")
        lines: list[str] = []
        try:
            ok = await walk_through(stack, lines)
        finally:
            print("\n".join(lines))
        print("every answer as the profiles promise" if ok else "UNEXPECTED ANSWERS above")
        if serve and ok:
            print(f"serving; discovery at {stack.fhir_base}/.well-known/smart-configuration;"
                  " dev users: " + ", ".join(sorted(stack.users)) + ". Ctrl-C stops.")
            await asyncio.Event().wait()
        return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.smart_on_fhir",
                                     description=__doc__)
    parser.add_argument("--serve", action="store_true",
                        help="keep serving after the walk-through")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(amain(args.serve))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
