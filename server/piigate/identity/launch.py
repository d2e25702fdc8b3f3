"""Stage 3 for SMART-on-FHIR tokens: the launch `patient` context.

A SMART authorization server puts the patient in context into the token response and,
with many servers, into the access token as a `patient` claim (SMART App Launch
§"Launch context arrives with your access_token"). For a clinician app
(`launch_patient`) that patient, not the token holder, is whose data the call is about.

- The claim must be a FHIR `id` (R4 §2.24.0.1: 1-64 of `A-Z a-z 0-9 - .`), else
  LAUNCH_CONTEXT_MISSING: a malformed id can name nobody.
- A request that names a `patient` must name the token's own (LAUNCH_PATIENT_MISMATCH):
  an app confused about its context, or one trying another patient's id, gets nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from piigate.config import Profile
from piigate.errors import LaunchContextMissing, LaunchPatientMismatch

LAUNCH_PATIENT_CLAIM = "patient"
FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,64}")


def launch_patient_id(profile: Profile, claims: Mapping[str, Any]) -> str:
    """The FHIR Patient id of the token's launch context."""
    value = claims.get(LAUNCH_PATIENT_CLAIM)
    if not isinstance(value, str) or not FHIR_ID.fullmatch(value):
        raise LaunchContextMissing({"profile": profile.name})
    return value


def check_patient_matches(profile: Profile, asked: str, claims: Mapping[str, Any]) -> None:
    """A `patient` named in the request is the token's launch patient."""
    if asked and claims.get(LAUNCH_PATIENT_CLAIM) != asked:
        raise LaunchPatientMismatch({"profile": profile.name})
