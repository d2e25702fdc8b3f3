"""The tags that bind a vault token to the person it belongs to.

When a user's PII is tokenized (the identity provider's Action, or the dev issuer's
migration helper), the vault token is tagged with `binding_tag(iss, sub)`, and, for a
patient of a FHIR server, with `patient_tag(fhir_base, patient_id)` too. They serve two
reads:

- a profile that requires binding asks the vault for `token_ids=T&tags=<tag of this
  token's iss+sub>`; Piiano intersects the two, so a token that belongs to another user
  matches nothing;
- a profile that names its subject without their token (`on_behalf_of`: a customer by
  iss+sub; `launch_patient`: the SMART launch patient by FHIR id) asks for `tags=<tag>`
  alone: the one token carrying it is the person's.

The tag is a hash, so neither the vault nor its audit log learns the user id from it; with
a key it cannot be recomputed by anyone who lacks the key.
"""

from __future__ import annotations

import hashlib
import hmac

TAG_PREFIX = "piigate-sub-"
PATIENT_TAG_PREFIX = "piigate-pat-"


def binding_tag(issuer: str, subject: str, key: bytes | None = None) -> str:
    """`piigate-sub-` + 32 hex digits of SHA-256 (or HMAC-SHA-256 under `key`) of iss+sub.

    The issuer and subject are joined with a NUL byte, which neither may contain, so no two
    (iss, sub) pairs share an input.
    """
    message = issuer.encode() + b"\x00" + subject.encode()
    digest = (
        hmac.new(key, message, hashlib.sha256).hexdigest()
        if key
        else hashlib.sha256(message).hexdigest()
    )
    return TAG_PREFIX + digest[:32]


def patient_tag(fhir_base: str, patient_id: str, key: bytes | None = None) -> str:
    """`piigate-pat-` + 32 hex digits of SHA-256 (or HMAC-SHA-256 under `key`) of the FHIR
    server's base (the namespace a Patient id is unique in) and the Patient id.

    The input starts with a label of its own, so a patient tag never equals the binding
    tag of a user whose `sub` happens to be a Patient id at an issuer named like the base.
    """
    message = b"patient\x00" + fhir_base.encode() + b"\x00" + patient_id.encode()
    digest = (
        hmac.new(key, message, hashlib.sha256).hexdigest()
        if key
        else hashlib.sha256(message).hexdigest()
    )
    return PATIENT_TAG_PREFIX + digest[:32]
