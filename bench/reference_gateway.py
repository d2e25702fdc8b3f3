"""The reference: the detokenization gateway a team would write in an afternoon.

    REFERENCE_VAULT_KEY_FHIR=... REFERENCE_VAULT_KEY_SUPPORT=... \\
    python -m bench.reference_gateway --issuer URL --vault URL [--listen 127.0.0.1:0]
                                      [--loop asyncio|uvloop]

Same proto, same two profiles as the demo configuration (smart_on_fhir: `user_id` raw;
support: `ssn` and `email` masked by the vault, `user_id` redacted), and the obvious code:
a grpc.aio servicer that, on every call, verifies the caller's bearer token and the
subject token with PyJWT's `PyJWKClient` (its JWKS fetch is blocking urllib, cached for
five minutes, as the PyJWT docs show it) and `jwt.decode`, then makes one httpx
AsyncClient call to the vault's detokenize. No verified-token cache, no coalescing, no
audit trail: this is the baseline piigate has to beat, not a design to copy.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
import httpx
import jwt

from bench import serving
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

PII_CLAIM = "https://example.com/pii_token"
CALLER_AUDIENCE = "piigate"
DETOKENIZE = "/api/pvlt/1.0/data/collections/users/tokens"


@dataclass(frozen=True)
class Profile:
    name: str
    audience: str  # the subject token must be issued for this API
    scope: str | None  # and carry this scope, if set
    reason: str
    reason_number: pb.Reason.ValueType
    fields: dict[str, str]  # field -> raw | mask | redact, in response order
    vault_key_env: str


PROFILES = {
    "fhir-app": Profile(
        "smart_on_fhir", "https://fhir.example.com", "patient/Patient.read",
        "AppFunctionality", pb.REASON_APP_FUNCTIONALITY, {"user_id": "raw"},
        "REFERENCE_VAULT_KEY_FHIR",
    ),
    "support-tool": Profile(
        "support", "https://support.example.com", None,
        "AccountManagement", pb.REASON_ACCOUNT_MANAGEMENT,
        {"ssn": "mask", "email": "mask", "user_id": "redact"}, "REFERENCE_VAULT_KEY_SUPPORT",
    ),
}  # fmt: skip
DISCLOSURE = {"raw": pb.DISCLOSURE_RAW, "mask": pb.DISCLOSURE_MASKED}


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """`context.abort`, which raises; spelled out so type checkers know it never returns."""
    await context.abort(code, details)
    raise AssertionError("context.abort returned")


class ReferenceGateway(pb_grpc.DetokenizationServiceServicer):
    def __init__(self, issuer: str, vault_url: str) -> None:
        self.issuer = issuer
        self.jwks = jwt.PyJWKClient(issuer.rstrip("/") + "/.well-known/jwks.json")
        self.http = httpx.AsyncClient(base_url=vault_url, timeout=5.0)
        self.vault_keys = {p.name: os.environ[p.vault_key_env] for p in PROFILES.values()}

    def decode(self, token: str, audience: str) -> dict[str, Any]:
        signing_key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token, signing_key.key, algorithms=["RS256"], audience=audience, issuer=self.issuer
        )

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        metadata = dict(context.invocation_metadata() or ())
        authorization = str(metadata.get("authorization", ""))
        if not authorization.startswith("Bearer "):
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing caller token")
        try:
            caller = self.decode(authorization.removeprefix("Bearer "), CALLER_AUDIENCE)
        except jwt.PyJWTError:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid caller token")
        profile = PROFILES.get(caller.get("azp", ""))
        if profile is None:
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "no profile for caller")
        try:
            subject = self.decode(request.subject_token, profile.audience)
        except jwt.PyJWTError:
            await abort(context, grpc.StatusCode.UNAUTHENTICATED, "invalid subject token")
        if profile.scope and profile.scope not in str(subject.get("scope", "")).split():
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, "missing scope")
        token_id = subject.get(PII_CLAIM)
        if not isinstance(token_id, str):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no pii token claim")

        props = [f"{n}.mask" if d == "mask" else n for n, d in profile.fields.items()
                 if d != "redact"]  # fmt: skip
        params = {"reason": profile.reason, "token_ids": token_id, "props": props}
        headers = {"Authorization": f"Bearer {self.vault_keys[profile.name]}"}
        response = await self.http.get(DETOKENIZE, params=params, headers=headers)
        if response.status_code != 200:
            await abort(context, grpc.StatusCode.UNAVAILABLE, "vault error")
        items = response.json()
        if not items:
            await abort(context, grpc.StatusCode.NOT_FOUND, "unknown token")
        values = items[0]["fields"]

        fields = []
        for name, disposition in profile.fields.items():
            if disposition == "redact":
                fields.append(pb.DisclosedField(name=name, disclosure=pb.DISCLOSURE_REDACTED))
                continue
            value = values.get(f"{name}.mask" if disposition == "mask" else name)
            if value is not None:
                fields.append(pb.DisclosedField(
                    name=name, value=str(value), disclosure=DISCLOSURE[disposition]))  # fmt: skip
        return pb.DetokenizeResponse(
            token_id=token_id, profile=profile.name, reason=profile.reason_number, fields=fields
        )


async def serve(listen: str, issuer: str, vault_url: str) -> None:
    # Only Detokenize is measured; the generated base answers UNIMPLEMENTED for the rest.
    gateway = ReferenceGateway(issuer, vault_url)  # type: ignore[abstract]
    server = grpc.aio.server()
    pb_grpc.add_DetokenizationServiceServicer_to_server(gateway, server)
    await serving.serve_until_signalled(server, listen, on_stop=gateway.http.aclose)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--issuer", required=True, help="the expected iss, e.g. http://h:p/")
    parser.add_argument("--vault", required=True, help="the vault's base URL")
    parser.add_argument("--loop", choices=serving.LOOPS, default="asyncio")
    args = parser.parse_args()
    serving.run(serve(args.listen, args.issuer, args.vault), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
