"""Test helper: the gateway's pipeline with fakes at its I/O edges only.

`build()` composes the real `DetokenizationPipeline` (a `SubjectDecider`, an
`AuditRecorder`, an `AbuseGuard`, the real profiles and decision) over fakes for the
callers, the token verifier, the vault, the audit sink and the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from piigate import errors
from piigate.audit.event import AuditEvent
from piigate.audit.recorder import AuditRecorder
from piigate.config import GatewayConfig, parse_config
from piigate.errors import GatewayError
from piigate.identity.caller import Caller
from piigate.identity.peer import PeerIdentity
from piigate.limits.abuse import AbuseGuard
from piigate.limits.replay import ReplayGuard
from piigate.pipeline import Call, DetokenizationPipeline, Limits, SubjectDecider
from piigate.policy.decision import DisclosureRequest
from piigate.policy.profiles import ProfileIndex
from piigate.telemetry.metrics import GatewayMetrics
from piigate.telemetry.tracing import NO_TRACING, Tracing
from piigate.tokens.verification import VerifiedToken
from piigate.vault.binding import binding_tag, patient_tag
from piigate.vault.client import DetokenizeQuery

NOW = 1_800_000_000.0
ISS = "http://127.0.0.1:9000/"
CLAIM = "https://example.com/pii_token"


def config(**profile: Any) -> GatewayConfig:
    support: dict[str, Any] = {
        "callers": ["support-tool"],
        "audiences": ["https://support.example.com"],
        "collection": "users",
        "reasons": ["AccountManagement", "Other"],
        "vault_api_key_env": "SUPPORT_VAULT_KEY",
        "fields": {"ssn": "mask", "email": "raw", "user_id": "redact"},
        "step_up": {"email": {"acr": ["mfa"], "otherwise": "mask"}},
        **profile,
    }
    return parse_config({
        "vault": {"url": "http://127.0.0.1:8123"},
        "issuers": [{"name": "dev", "issuer": ISS,
                     "jwks_uri": "http://127.0.0.1:9000/.well-known/jwks.json",
                     "denied_claims": ["ssn"]}],
        "profiles": {"support": support},
    }, {"SUPPORT_VAULT_KEY": "k-support"}, Path("."))


def user_claims(**extra: Any) -> dict[str, Any]:
    return {"iss": ISS, "sub": "auth0|alice", "aud": "https://support.example.com",
            "exp": NOW + 300, "iat": NOW - 10, "jti": "j-1", CLAIM: "tok-alice", **extra}


@dataclass
class FakeVerifier:
    """Tokens are names of claim sets; an unknown name is a malformed token. A token's
    issuer name is looked up by its `iss` (default "dev")."""

    tokens: Mapping[str, Mapping[str, Any]]
    issuer_names: Mapping[str, str] = field(default_factory=dict)

    async def verify(self, token: str, *, accept_opaque: bool = False) -> VerifiedToken:
        claims = self.tokens.get(token)
        if claims is None:
            raise errors.TokenMalformed()
        return VerifiedToken(self.issuer_names.get(claims["iss"], "dev"), MappingProxyType({}),
                             MappingProxyType(dict(claims)), float(claims["exp"]))


@dataclass
class FakeCallers:
    client_id: str | None = "support-tool"

    async def identify(
        self, metadata: Sequence[tuple[str, str | bytes]], peer: PeerIdentity | None
    ) -> Caller:
        if self.client_id is None:
            raise errors.CallerCredentialMissing()
        return Caller(self.client_id, "dev", peer)


@dataclass
class FakeVault:
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {
        "tok-alice": {"ssn.mask": "***-**-1234", "email.mask": "a****@example.com",
                      "email": "alice@example.com"},
        "tok-bob": {"ssn.mask": "***-**-4321", "email.mask": "b**@example.com"},
    })
    queries: list[DetokenizeQuery] = field(default_factory=list)
    failure: BaseException | None = None
    # Each token's tags, as migration writes them; a query by tags alone selects by them
    # (with token ids, tags are not checked: bound reads are the vault's business).
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {
        "tok-alice": (binding_tag(ISS, "auth0|alice"), patient_tag(ISS, "pat-alice")),
        "tok-bob": (binding_tag(ISS, "auth0|bob"), patient_tag(ISS, "pat-bob")),
    })

    async def detokenize(
        self, query: DetokenizeQuery, timeout_s: float
    ) -> dict[str, Mapping[str, Any]]:
        self.queries.append(query)
        if self.failure is not None:
            raise self.failure
        ids = query.token_ids or tuple(
            t for t, tags in self.tags.items() if set(query.tags) <= set(tags))
        return {t: self.records[t] for t in ids if t in self.records}


@dataclass
class MemorySink:
    events: list[AuditEvent] = field(default_factory=list)
    failure: GatewayError | None = None

    async def write(self, event: AuditEvent) -> None:
        if self.failure is not None:
            raise self.failure
        self.events.append(event)

    async def close(self) -> None:
        return None


@dataclass
class Parts:
    pipeline: DetokenizationPipeline
    vault: FakeVault
    sink: MemorySink
    verifier: FakeVerifier
    callers: FakeCallers
    abuse: AbuseGuard
    config: GatewayConfig

    async def run(self, *tokens: str, batch: bool = False, fields: tuple[str, ...] = (),
                  reason: str | None = None, adhoc: str = "") -> list[Any]:
        call = Call((), None, None, tokens, DisclosureRequest(fields, reason, adhoc),
                    batch=batch or len(tokens) != 1)
        try:
            return [outcome for _, outcome in await self.pipeline.run(call)]
        except GatewayError as exc:
            return [exc]


def build(cfg: GatewayConfig | None = None, tracing: Tracing = NO_TRACING,
          **tokens: Mapping[str, Any]) -> Parts:
    cfg = cfg or config()
    verifier = FakeVerifier({"alice": user_claims(),
                             "bob": user_claims(sub="auth0|bob", **{CLAIM: "tok-bob"}),
                             **tokens})
    vault, sink, callers = FakeVault(), MemorySink(), FakeCallers()
    issuers = {i.name: i for i in cfg.issuers}
    abuse = AbuseGuard(cfg.profiles, ReplayGuard(lambda: NOW))
    pipe = DetokenizationPipeline(
        callers=callers, profiles=ProfileIndex(cfg.profiles),
        decider=SubjectDecider(verifier, issuers),  # type: ignore[arg-type]
        vault=vault, recorder=AuditRecorder(sink, GatewayMetrics()), abuse=abuse,
        limits=Limits(request_timeout_s=5.0, vault_timeout_s=2.0, max_batch_size=3),
        clock=lambda: NOW, tracing=tracing,
    )
    return Parts(pipe, vault, sink, verifier, callers, abuse, cfg)
