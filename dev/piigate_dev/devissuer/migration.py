"""Lazy user migration: the flow in which the identity provider keeps only a vault token.

On a legacy user's first login (Auth0's "lazy migration"), the user's PII goes into the
vault and the identity provider stores only the vault token id, which it then puts into
every access token as the namespaced pii claim:

1. `POST {vault}/api/pvlt/1.0/data/collections/{c}/objects?reason=R` with the record
   -> `{"id": OBJECT_ID}`;
2. `POST {vault}/api/pvlt/1.0/data/collections/{c}/tokens?reason=R` with
   `[{"type": "pointer", "object": {"id": OBJECT_ID}, "tags": [binding_tag(iss, sub)]}]`
   -> `[{"token_id": TOKEN_ID}]` (a pointer token detokenizes to the object's current
   values; the tag binds it to this user, see `piigate.vault.binding`, and is how a
   support desk's `on_behalf_of` profile finds the user's record without their token).
   A user who is also a patient of a FHIR server gets `patient_tag(fhir_base, patient
   id)` on the same token, which is how a clinician's `launch_patient` profile finds it;
3. an access token for the user carrying TOKEN_ID in the pii claim.

The record's values never appear in an exception, a log line or the result: a vault error
names only the step, the HTTP status and the vault's `error_code`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from piigate.vault import piiano
from piigate.vault.binding import binding_tag, patient_tag
from piigate_dev.devissuer.claims import UserTokenRequest
from piigate_dev.devissuer.remote import RemoteIssuer, UserTokenSource

API_BASE = piiano.API_BASE.lstrip("/") + "/data/collections"
REASONS = frozenset(piiano.REASONS)
_TIMEOUT = aiohttp.ClientTimeout(total=30)


class VaultCallFailed(Exception):
    """The vault refused or failed a migration step.

    Carries the step (`add object` / `tokenize`), the HTTP status (None when the vault was
    unreachable) and the vault's `error_code` (`PV1004`, ...). Never the vault's message or
    context, which may quote the values sent.
    """

    def __init__(
        self, step: str, status: int | None, error_code: str | None, problem: str | None = None
    ) -> None:
        self.step = step
        self.status = status
        self.error_code = error_code
        detail = f"status {status}" if status is not None else "unreachable"
        if error_code is not None:
            detail += f", error_code {error_code}"
        if problem is not None:
            detail += f", {problem}"
        super().__init__(f"vault {step} failed ({detail})")


@dataclass(frozen=True)
class VaultTarget:
    """Where the user's record goes: the vault's base URL, an API key and a collection."""

    base_url: str
    api_key: str = field(repr=False)
    collection: str

    def url(self, leaf: str, reason: str, adhoc_reason: str | None) -> URL:
        """`{base}/api/pvlt/1.0/data/collections/{collection}/{leaf}?reason=...`."""
        query = {"reason": reason}
        if adhoc_reason is not None:
            query["adhoc_reason"] = adhoc_reason
        # The collection is one path segment: quote everything, `/` included.
        segment = quote(self.collection, safe="")
        url = URL(self.base_url).joinpath(API_BASE, segment, leaf, encoded=True)
        return url.with_query(query)


@dataclass(frozen=True)
class MigratedUser:
    """The migration's outcome. The record is deliberately not kept here."""

    subject: str
    token_id: str
    access_token: str = field(repr=False)


async def migrate_user(
    http: aiohttp.ClientSession,
    vault: VaultTarget,
    issuer: UserTokenSource | str,
    record: Mapping[str, object],
    *,
    subject: str,
    audience: str | Sequence[str],
    scope: str,
    reason: str = "AccountManagement",
    adhoc_reason: str | None = None,
    bind: bool = True,
    binding_key: bytes | None = None,
    azp: str | None = None,
    fhir_patient_id: str | None = None,
    fhir_base: str | None = None,
) -> MigratedUser:
    """Store `record` in the vault, tokenize it, and mint the user's access token.

    `issuer` is an in-process `DevIssuer` or the base URL of a running dev issuer.
    `bind=False` leaves the binding tag off the vault token; `binding_key` keys its hash
    (the gateway must then be given the same key: the issuer's `binding_key_env`).
    `fhir_patient_id` also tags the token with the patient tag of that FHIR Patient id,
    namespaced by `fhir_base` (default: the issuer's `iss`; the gateway's `fhir_base` must
    say the same) and keyed by `binding_key` (the practitioners' issuer's key).
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {', '.join(sorted(REASONS))}")
    if (reason == "Other") != (adhoc_reason is not None):
        raise ValueError("adhoc_reason is required with reason Other, and only then")
    source: UserTokenSource = RemoteIssuer(http, issuer) if isinstance(issuer, str) else issuer
    # Learn `iss` first: the binding tag goes onto the token at creation.
    iss = await source.issuer_id()

    created = await _post(http, vault, "add object", "objects", reason, adhoc_reason, dict(record))
    object_id = created.get("id") if isinstance(created, dict) else None
    if not isinstance(object_id, str) or not object_id:
        raise VaultCallFailed("add object", 200, None, "unexpected answer shape")

    tokenize: dict[str, Any] = {"type": "pointer", "object": {"id": object_id}}
    tags = [binding_tag(iss, subject, binding_key)] if bind else []
    if fhir_patient_id is not None:
        tags.append(patient_tag(fhir_base or iss, fhir_patient_id, binding_key))
    if tags:
        tokenize["tags"] = tags
    tokens = await _post(http, vault, "tokenize", "tokens", reason, adhoc_reason, [tokenize])
    token_id = (
        tokens[0].get("token_id")
        if isinstance(tokens, list) and len(tokens) == 1 and isinstance(tokens[0], dict)
        else None
    )
    if not isinstance(token_id, str) or not token_id:
        raise VaultCallFailed("tokenize", 200, None, "unexpected answer shape")

    aud = audience if isinstance(audience, str) else tuple(audience)
    access_token = await source.user_token(
        UserTokenRequest(sub=subject, pii_token=token_id, audience=aud, scope=scope, azp=azp)
    )
    return MigratedUser(subject=subject, token_id=token_id, access_token=access_token)


async def _post(
    http: aiohttp.ClientSession,
    vault: VaultTarget,
    step: str,
    leaf: str,
    reason: str,
    adhoc_reason: str | None,
    body: object,
) -> object:
    headers = {"Authorization": f"Bearer {vault.api_key}"}
    try:
        async with http.post(
            vault.url(leaf, reason, adhoc_reason),
            json=body,
            headers=headers,
            timeout=_TIMEOUT,
            allow_redirects=False,  # never replay the API key and the record elsewhere
        ) as response:
            if not 200 <= response.status < 300:  # Piiano answers 200; accept any success
                raise VaultCallFailed(step, response.status, await _error_code(response))
            return await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise VaultCallFailed(step, None, None) from exc
    except ValueError:  # a 200 whose body is not JSON; `from None`: the decode error holds the body
        raise VaultCallFailed(step, 200, None, "answer is not JSON") from None


async def _error_code(response: aiohttp.ClientResponse) -> str | None:
    """The vault's `error_code`, if the body has one; nothing else from the body is kept."""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return None
    code = body.get("error_code") if isinstance(body, dict) else None
    # Only a short, code-shaped string: a body is not a place to smuggle values out from.
    return code if isinstance(code, str) and len(code) <= 16 and code.isalnum() else None
