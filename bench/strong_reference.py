"""The strong reference: the gateway a careful team writes in a day, on the fast stack.

    REFERENCE_VAULT_KEY_FHIR=... REFERENCE_VAULT_KEY_SUPPORT=... \\
    python -m bench.strong_reference --issuer URL --vault URL [--cache] [--log FILE]
                                     [--listen 127.0.0.1:0] [--loop uvloop|asyncio]

grpc.aio on uvloop; the issuer's JWKS fetched once at start (aiohttp); on every call both
tokens verified with PyJWT (`jwt.decode`: RS256 only, signature, `exp`, `iss`, `aud`), the
vault read with one aiohttp call on a pooled session, one JSON line logged per call
(`logging` + `json.dumps`, to a file), the same proto and the same two profiles as
`bench.reference_gateway`. With `--cache`, a verified-token cache of five lines: a dict of
token to claims, kept until the token's `exp` (unbounded: fine for a bounded benchmark run,
not for production). No coalescing, no audit chain, no limits: what piigate's extra
machinery has to pay for against (rows `strong` and `strong-cached`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import aiohttp
import grpc
import jwt

from bench import serving
from bench.reference_gateway import CALLER_AUDIENCE, DETOKENIZE, DISCLOSURE, PII_CLAIM, PROFILES
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc

log = logging.getLogger("strong.calls")


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class StrongGateway(pb_grpc.DetokenizationServiceServicer):
    def __init__(self, issuer: str, keys: dict[str, Any], http: aiohttp.ClientSession,
                 vault_url: str, cache: bool) -> None:  # fmt: skip
        self.issuer, self.keys, self.http = issuer, keys, http
        self.url = vault_url.rstrip("/") + DETOKENIZE
        self.vault_keys = {p.name: os.environ[p.vault_key_env] for p in PROFILES.values()}
        self.cache: dict[str, dict[str, Any]] | None = {} if cache else None

    def verify(self, token: str, audience: str) -> dict[str, Any]:
        hit = self.cache.get(token) if self.cache is not None else None
        if hit is not None and hit["exp"] > time.time() and audience in _audiences(hit):
            return hit
        kid = jwt.get_unverified_header(token).get("kid")
        if kid not in self.keys:
            raise jwt.InvalidKeyError("unknown kid")
        claims: dict[str, Any] = jwt.decode(
            token, self.keys[kid], algorithms=["RS256"], audience=audience, issuer=self.issuer,
            options={"require": ["exp", "iss", "aud"]},
        )  # fmt: skip
        if self.cache is not None:
            self.cache[token] = claims
        return claims

    async def Detokenize(
        self, request: pb.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DetokenizeResponse:
        # Who asked, for what, and the outcome; never a token, subject or value.
        entry: dict[str, Any] = {"ts": time.time(), "request_id": os.urandom(16).hex(),
                                 "outcome": "allowed", "reason": None}  # fmt: skip
        try:
            return await self._detokenize(request, context, entry)
        except Refused as exc:
            entry["outcome"] = exc.details
            await context.abort(exc.code, exc.details)
            raise AssertionError("context.abort returned") from exc
        finally:
            log.info(json.dumps(entry))

    async def _detokenize(self, request: pb.DetokenizeRequest,
                          context: grpc.aio.ServicerContext,
                          entry: dict[str, Any]) -> pb.DetokenizeResponse:  # fmt: skip
        authorization = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = str(value)
        try:
            caller = self.verify(authorization.removeprefix("Bearer "), CALLER_AUDIENCE)
        except jwt.PyJWTError:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "invalid caller token") from None
        profile = PROFILES.get(caller.get("azp", ""))
        if profile is None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "no profile for caller")
        entry["caller"], entry["profile"] = caller["azp"], profile.name
        entry["reason"] = profile.reason
        try:
            subject = self.verify(request.subject_token, profile.audience)
        except jwt.PyJWTError:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "invalid subject token") from None
        if profile.scope and profile.scope not in str(subject.get("scope", "")).split():
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "missing scope")
        token_id = subject.get(PII_CLAIM)
        if not isinstance(token_id, str):
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "no pii token claim")
        entry["fields"] = list(profile.fields)

        props = [f"{n}.mask" if d == "mask" else n for n, d in profile.fields.items()
                 if d != "redact"]  # fmt: skip
        params = [("reason", profile.reason), ("token_ids", token_id)]
        params += [("props", p) for p in props]
        headers = {"Authorization": f"Bearer {self.vault_keys[profile.name]}"}
        try:
            async with self.http.get(self.url, params=params, headers=headers) as response:
                items = await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            items = None
        if items is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "vault error")
        if not items:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown token")
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


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return aud if isinstance(aud, list) else [str(aud)]


async def serve(listen: str, issuer: str, vault_url: str, cache: bool) -> None:
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0))
    jwks_url = issuer.rstrip("/") + "/.well-known/jwks.json"
    async with http.get(jwks_url) as response:  # once, at start
        response.raise_for_status()
        key_set = jwt.PyJWKSet.from_dict(await response.json())
    keys = {k.key_id: k.key for k in key_set.keys if k.key_id}
    # Only Detokenize is measured; the generated base answers UNIMPLEMENTED for the rest.
    gateway = StrongGateway(issuer, keys, http, vault_url, cache)  # type: ignore[abstract]
    server = grpc.aio.server()
    pb_grpc.add_DetokenizationServiceServicer_to_server(gateway, server)
    await serving.serve_until_signalled(server, listen, on_stop=http.close)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--issuer", required=True, help="the expected iss, e.g. http://h:p/")
    parser.add_argument("--vault", required=True, help="the vault's base URL")
    parser.add_argument("--cache", action="store_true", help="keep verified tokens until exp")
    parser.add_argument("--log", default=os.devnull, help="file for the per-call JSON lines")
    parser.add_argument("--loop", choices=serving.LOOPS, default="uvloop")
    args = parser.parse_args()
    handler = logging.FileHandler(args.log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    serving.run(serve(args.listen, args.issuer, args.vault, args.cache), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
