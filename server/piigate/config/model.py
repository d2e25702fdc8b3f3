"""The validated, frozen configuration the rest of piigate is built from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from piigate.config.network import VaultTlsFiles
from piigate.config.presets import IssuerKind, TypRuleName
from piigate.config.state import StateConfig
from piigate.config.telemetry import TelemetryConfig
from piigate.identity.peer import PeerSelector
from piigate.transport.addresses import ListenAddress
from piigate.transport.proxies import DIRECT, Proxies
from piigate.vault.piiano import REASONS

Disposition = Literal["raw", "mask", "redact"]
# Whose data a call is about (see piigate.identity.resolution).
SubjectResolution = Literal["token_claim", "on_behalf_of", "launch_patient"]
SUBJECT_RESOLUTIONS: tuple[SubjectResolution, ...] = ("token_claim", "on_behalf_of",
                                                      "launch_patient")
TypRule = TypRuleName

PIIANO_REASONS = REASONS
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "Ed25519",  # RFC 9864's fully specified name for EdDSA over Ed25519
)  # fmt: skip
DEFAULT_PII_TOKEN_CLAIM = "https://example.com/pii_token"  # noqa: S105 - a claim name
# Property names as Piiano allows them; also what callers may name in `fields`.
PROPERTY_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every `key.path: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: Path  # PEM certificate chain
    key_file: Path  # PEM private key
    client_ca_file: Path | None  # trust bundle for client certificates (mTLS)
    require_client_auth: bool


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: ListenAddress
    tls: TlsConfig | None
    request_timeout_s: float  # budget when the caller sets no deadline, and the cap when it does
    max_request_bytes: int
    max_metadata_bytes: int
    max_concurrent_rpcs: int
    shutdown_grace_s: float
    metrics_listen: ListenAddress | None  # Prometheus text on http://HOST:PORT/metrics
    max_batch_size: int = 100  # subject tokens in one BatchDetokenize call
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    handler_threads: int = 256  # grpc handler threads; each holds one call until it is answered
    reload_interval_s: float = 5.0  # how often secret and TLS files are checked (0: SIGHUP only)


@dataclass(frozen=True, slots=True)
class CallerConfig:
    audience: str  # caller credentials must be issued for piigate itself
    issuers: tuple[str, ...]  # names of issuers trusted to mint caller credentials
    required_scopes: frozenset[str]  # scopes every caller credential must carry


@dataclass(frozen=True, slots=True)
class VaultConfig:
    url: str
    timeout_s: float
    max_connections: int
    max_response_bytes: int
    coalesce: bool = True  # share vault calls between concurrent requests of one shape
    coalesce_wait_s: float = 0.002  # the longest a request waits for a busy shape's batch
    coalesce_max_batch: int = 64
    coalesce_max_inflight: int = 2  # calls per shape under way before requests gather
    tls: VaultTlsFiles | None = None  # [vault] ca_file, client_cert_file, client_key_file


@dataclass(frozen=True, slots=True)
class AuditConfig:
    sink: Literal["stdout", "file"]
    path: Path | None
    fsync: bool  # fsync every event before PII is returned (durable, slower)


@dataclass(frozen=True, slots=True)
class JwksConfig:
    """How one issuer's keys are fetched and cached (see piigate.tokens.jwks)."""

    default_ttl_s: float
    min_ttl_s: float
    max_ttl_s: float
    stale_if_error_s: float  # keep serving the last good set this long after it expires
    unknown_kid_cooldown_s: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class IntrospectionConfig:
    """How an opaque-token issuer's tokens are checked: RFC 7662 introspection with
    piigate's own client credentials (see piigate.tokens.introspection)."""

    endpoint: str | None  # None: `introspection_endpoint` of the openid-configuration
    client_id: str
    client_secret: str = field(repr=False)  # client_secret_basic; "" with a private key
    private_key: str = field(repr=False)  # private_key_jwt: a PEM; "" with a secret
    key_id: str | None = None  # the assertion's `kid`
    algorithm: str = "RS256"  # the assertion's `alg`
    assertion_audience: str | None = None  # None: the introspection endpoint's URL
    cache_s: float = 60.0  # an answer is kept at most this long (and never past its exp)
    timeout_s: float = 3.0
    token_prefix: str | None = None  # routes tokens starting with it to this issuer

    @property
    def auth_method(self) -> Literal["client_secret_basic", "private_key_jwt"]:
        return "private_key_jwt" if self.private_key else "client_secret_basic"


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    name: str
    kind: IssuerKind
    issuer: str
    jwks_uri: str | None  # None: discovered from the issuer's openid-configuration
    algorithms: tuple[str, ...]
    typ: TypRule
    leeway_s: int
    max_lifetime_s: int | None
    max_age_s: int | None
    pii_token_claim: tuple[str, ...]  # a claim name, or a path of names into nested objects
    client_id_claims: tuple[str, ...]
    scope_claims: tuple[str, ...]
    audience_claims: tuple[str, ...]
    caller_audience_in_token: bool
    jwks: JwksConfig
    # Claims that must never be in this issuer's tokens (raw PII an Action should have
    # kept in the vault, e.g. "ssn"): a token carrying one is refused and reported.
    denied_claims: tuple[str, ...] = ()
    # Keys the binding tag's hash (HMAC-SHA-256) so it cannot be recomputed from iss+sub
    # by anyone without the key; must match the key the tokenizing Action used.
    binding_key: bytes | None = field(default=None, repr=False)
    # "opaque": tokens are not JWTs but references, checked by introspection.
    token_format: Literal["jwt", "opaque"] = "jwt"  # noqa: S105 - a format, not a secret
    introspection: IntrospectionConfig | None = None  # set exactly when opaque


@dataclass(frozen=True, slots=True)
class StepUp:
    """Conditions for disclosing a field raw; when unmet the field falls back to
    `otherwise` (masked, redacted, or the whole call refused)."""

    reasons: frozenset[str]  # empty: any of the profile's reasons
    acr: frozenset[str]  # empty: no acr required; else the token's acr must be one of these
    max_auth_age_s: int | None  # the token's auth_time must be at most this old
    otherwise: Literal["mask", "redact", "refuse"]


@dataclass(frozen=True, slots=True)
class AbuseLimits:
    """Per-profile abuse limits (piigate.limits.ratelimit); None disables a limit."""

    caller_per_s: float | None
    caller_burst: int
    subject_per_s: float | None
    subject_burst: int
    distinct_subjects: int | None  # per caller within the window: bulk harvesting
    distinct_window_s: float
    # With a shared store (`[state]`) that fails: refuse (default) or admit unlimited.
    on_store_failure: Literal["fail_closed", "fail_open"] = "fail_closed"
    # Per actor (the support agent, the practitioner) as well as per caller: one console
    # serves many agents, and each agent's own reach is capped on its own.
    actor_per_s: float | None = None
    actor_burst: int = 10
    actor_distinct_subjects: int | None = None  # per actor within distinct_window_s


@dataclass(frozen=True, slots=True)
class ActorRule:
    """`on_behalf_of`: who may act for a customer. The actor token must come from one of
    `issuers` and carry `permission` in the claim at `permission_claim`, and, when set, an
    `acr` among `acr` and an `auth_time` at most `max_auth_age_s` old."""

    issuers: frozenset[str]  # configured issuer names
    # A path: one opaque key (`permissions`, a namespaced URL) or keys into nested objects
    # (`realm_access`, `roles`); never a dotted string split on dots.
    permission_claim: tuple[str, ...]
    permission: str
    acr: frozenset[str] = frozenset()
    max_auth_age_s: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A service profile: who may call, on which users' tokens, for what, and how each
    vault property is disclosed. Properties not listed are never returned."""

    name: str
    callers: frozenset[str]
    audiences: frozenset[str]
    required_scopes: frozenset[str]
    reasons: frozenset[str]
    default_reason: str
    collection: str
    fields: Mapping[str, Disposition]  # in the order the profile lists them
    vault_api_key: str  # resolved from the environment variable or file the config names
    one_time_tokens: bool = False  # refuse a subject token whose jti was seen before
    peers: tuple[PeerSelector, ...] = ()  # mTLS identities (exact SPIFFE ID / SAN) of callers
    bind_tokens: bool = False  # the vault token must carry the tag of this token's iss+sub
    require_launch_patient: bool = False  # SMART: the token must carry a `patient` claim
    step_up: Mapping[str, StepUp] = field(default_factory=lambda: MappingProxyType({}))
    limits: AbuseLimits | None = None
    subject_resolution: SubjectResolution = "token_claim"
    actor: ActorRule | None = None  # set exactly for on_behalf_of
    subject_issuers: frozenset[str] = frozenset()  # on_behalf_of: whose customers
    purpose_required: bool = False  # the call must carry a purpose (a ticket reference)
    fhir_base: str | None = None  # launch_patient: the patient tag's namespace (None: iss)
    vault_api_key_file: Path | None = None  # the file, when it came from one (reloaded)

    def __repr__(self) -> str:  # never print the key
        return f"Profile(name={self.name!r}, collection={self.collection!r})"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    server: ServerConfig
    caller: CallerConfig
    vault: VaultConfig
    audit: AuditConfig
    issuers: tuple[IssuerConfig, ...]
    profiles: tuple[Profile, ...]
    state: StateConfig = field(default_factory=StateConfig)
    proxies: Proxies = DIRECT  # HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read once
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
