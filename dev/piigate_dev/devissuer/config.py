"""The dev issuer's configuration: read once from TOML, validated fully, frozen.

Client secrets never appear in the config text. A client names its secret by one of
`secret_sha256` (hex SHA-256 of the secret), `secret_env` (an environment variable) or
`secret_file` (a file whose content, minus trailing newlines, is the secret). Environment
and files are read here, at load time, and only the SHA-256 digest is kept: nothing else
in the issuer reads the environment or holds a plaintext secret. A client that
authenticates with `private_key_jwt` (RFC 7523 §2.2) registers its public keys instead:
`jwks = [{ kty = "EC", crv = "P-256", x = "...", y = "...", kid = "..." }]`, public
members only (a private member is refused), RSA of at least 2048 bits or EC P-256/P-384.
A client with `token_format = "opaque"` gets opaque client-credentials tokens (checked by
introspection) instead of JWTs.

Every mistake is reported with its key path (`clients[1].audiences`), all at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from piigate_dev.devissuer.claims import RESERVED

ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_PII_CLAIM = "https://example.com/pii_token"
ANY = "*"  # in `audiences` / `scopes`: the client may ask for any value

# The documented development defaults (like Piiano's `pvaultauth`): used only when the
# config names no clients at all.
DEV_CLIENT_ID = "dev-client"
DEV_CLIENT_SECRET = "dev-secret"  # noqa: S105 - a published development default

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


class ConfigError(Exception):
    """The config is invalid; `problems` lists `(key path, message)` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.problems))

    def __str__(self) -> str:
        return "\n".join(f"{path}: {message}" for path, message in self.problems)


@dataclass(frozen=True)
class ClientConfig:
    """A client-credentials client: its id, secret digest and what it may ask for.

    `audiences` / `scopes` of None mean any value (`["*"]` in the config). A client has a
    secret digest or public JWKs, never both.
    """

    client_id: str
    secret_sha256: bytes | None = field(repr=False)  # None: authenticates by private_key_jwt
    audiences: frozenset[str] | None
    scopes: frozenset[str] | None
    public_jwks: tuple[str, ...] = ()  # private_key_jwt: each registered public JWK, as JSON
    opaque_tokens: bool = False  # `token_format = "opaque"`: its tokens are introspected


@dataclass(frozen=True)
class IssuerConfig:
    """Everything the issuer needs, validated. `issuer=None`: the server's own base URL + `/`."""

    issuer: str | None = None
    algorithm: str = "RS256"
    jwks_max_age_s: int = 300
    pii_claim: str = DEFAULT_PII_CLAIM
    client_token_lifetime_s: int = 86400
    user_token_lifetime_s: int = 3600
    max_token_lifetime_s: int = 30 * 86400
    clients: tuple[ClientConfig, ...] = field(default_factory=lambda: (dev_client(),))

    def client(self, client_id: str) -> ClientConfig | None:
        """The client with this id, or None."""
        return next((c for c in self.clients if c.client_id == client_id), None)


def dev_client() -> ClientConfig:
    """`dev-client` / `dev-secret`, any audience, any scope: the no-config default."""
    digest = hashlib.sha256(DEV_CLIENT_SECRET.encode()).digest()
    return ClientConfig(DEV_CLIENT_ID, digest, audiences=None, scopes=None)


def load_issuer_config(path: str | Path, environ: Mapping[str, str] | None = None) -> IssuerConfig:
    """Read and validate a TOML config file; raise ConfigError listing every problem."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {str(path)!r}: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([("(file)", f"not valid TOML: {exc}")]) from exc
    return parse_issuer_config(data, Path(path).parent, os.environ if environ is None else environ)


def parse_issuer_config(
    data: Mapping[str, object], base_dir: Path, environ: Mapping[str, str]
) -> IssuerConfig:
    """Validate a parsed TOML document. Relative `secret_file` paths resolve from `base_dir`."""
    problems: list[tuple[str, str]] = []
    known = {
        "issuer", "algorithm", "jwks_max_age_s", "pii_claim", "client_token_lifetime_s",
        "user_token_lifetime_s", "max_token_lifetime_s", "clients",
    }  # fmt: skip
    for key in sorted(set(data) - known):
        problems.append((key, "unknown key"))
    defaults = IssuerConfig()

    issuer = data.get("issuer")
    if issuer is not None and not (isinstance(issuer, str) and _is_http_url(issuer)):
        problems.append(("issuer", "must be an http(s) URL such as 'http://127.0.0.1:9000/'"))
    algorithm = data.get("algorithm", defaults.algorithm)
    if algorithm not in ALGORITHMS:
        problems.append(("algorithm", f"must be one of {', '.join(ALGORITHMS)}"))
    pii_claim = data.get("pii_claim", defaults.pii_claim)
    if not isinstance(pii_claim, str) or not pii_claim:
        problems.append(("pii_claim", "must be a non-empty string"))
    elif pii_claim in RESERVED:
        problems.append(
            ("pii_claim", f"{pii_claim!r} is a registered claim; use a namespaced name")
        )

    def seconds(key: str, default: int, low: int, high: int) -> int:
        value = data.get(key, min(default, high))  # a default follows a lowered maximum
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            problems.append((key, f"must be an integer from {low} to {high}"))
            return default
        return value

    max_age = seconds("jwks_max_age_s", defaults.jwks_max_age_s, 0, 86400)
    max_lifetime = seconds(
        "max_token_lifetime_s", defaults.max_token_lifetime_s, 1, 10 * 365 * 86400
    )
    client_lifetime = seconds(
        "client_token_lifetime_s", defaults.client_token_lifetime_s, 1, max_lifetime
    )
    user_lifetime = seconds(
        "user_token_lifetime_s", defaults.user_token_lifetime_s, 1, max_lifetime
    )

    clients: tuple[ClientConfig, ...] = defaults.clients
    if "clients" in data:  # absent: the dev default client; `clients = []`: no clients at all
        clients = _parse_clients(data["clients"], base_dir, environ, problems)

    if problems:
        raise ConfigError(problems)
    assert isinstance(algorithm, str)  # checked above; narrows the type
    assert isinstance(pii_claim, str)
    return IssuerConfig(
        issuer=issuer if isinstance(issuer, str) else None,
        algorithm=algorithm,
        jwks_max_age_s=max_age,
        pii_claim=pii_claim,
        client_token_lifetime_s=client_lifetime,
        user_token_lifetime_s=user_lifetime,
        max_token_lifetime_s=max_lifetime,
        clients=clients,
    )


def _parse_clients(
    value: object, base_dir: Path, environ: Mapping[str, str], problems: list[tuple[str, str]]
) -> tuple[ClientConfig, ...]:
    if not isinstance(value, list):
        problems.append(("clients", "must be an array of tables ([[clients]])"))
        return ()
    clients: list[ClientConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(value):
        path = f"clients[{index}]"
        if not isinstance(entry, dict):
            problems.append((path, "must be a table"))
            continue
        before = len(problems)
        known = {
            "client_id", "secret_sha256", "secret_env", "secret_file", "jwks", "audiences",
            "scopes", "token_format",
        }  # fmt: skip
        for key in sorted(set(entry) - known):
            problems.append((f"{path}.{key}", "unknown key"))
        client_id = entry.get("client_id")
        if not isinstance(client_id, str) or not client_id or ":" in client_id:
            problems.append((f"{path}.client_id", "must be a non-empty string without ':'"))
        elif client_id in seen:
            problems.append((f"{path}.client_id", f"duplicate client_id {client_id!r}"))
        else:
            seen.add(client_id)
        digest: bytes | None = None
        jwks: tuple[str, ...] = ()
        if "jwks" in entry and not any(k in entry for k in _SECRET_SOURCES):
            jwks = _public_jwks(entry["jwks"], f"{path}.jwks", problems)
        else:
            digest = _secret_digest(entry, path, base_dir, environ, problems)
        audiences = _allowed(entry.get("audiences"), f"{path}.audiences", problems, scope=False)
        scopes = _allowed(entry.get("scopes", []), f"{path}.scopes", problems, scope=True)
        token_format = entry.get("token_format", "jwt")
        if token_format not in ("jwt", "opaque"):
            problems.append((f"{path}.token_format", 'must be "jwt" or "opaque"'))
        if len(problems) == before and isinstance(client_id, str) and (digest or jwks):
            clients.append(ClientConfig(client_id, digest, audiences, scopes, jwks,
                                        opaque_tokens=token_format == "opaque"))  # noqa: S105
    return tuple(clients)


def _secret_digest(
    entry: Mapping[str, object],
    path: str,
    base_dir: Path,
    environ: Mapping[str, str],
    problems: list[tuple[str, str]],
) -> bytes | None:
    sources = [k for k in (*_SECRET_SOURCES, "jwks") if k in entry]
    if len(sources) != 1:
        problems.append(
            (path, "needs exactly one of secret_sha256, secret_env, secret_file, jwks")
        )
        return None
    key = sources[0]
    value = entry[key]
    if not isinstance(value, str) or not value:
        problems.append((f"{path}.{key}", "must be a non-empty string"))
        return None
    if key == "secret_sha256":
        if not _HEX64.fullmatch(value):
            problems.append((f"{path}.{key}", "must be 64 hex digits (the secret's SHA-256)"))
            return None
        return bytes.fromhex(value)
    if key == "secret_env":
        if not _ENV_NAME.fullmatch(value):
            problems.append((f"{path}.{key}", "must be an environment variable name"))
            return None
        secret = environ.get(value)
        if not secret:  # the message names the variable, never a value
            problems.append((f"{path}.{key}", f"environment variable {value} is unset or empty"))
            return None
    else:
        try:
            secret = (base_dir / value).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append((f"{path}.{key}", f"cannot read {value!r}: {exc}"))
            return None
        if not secret:
            problems.append((f"{path}.{key}", f"{value!r} is empty"))
            return None
    return hashlib.sha256(secret.encode()).digest()


_SECRET_SOURCES = ("secret_sha256", "secret_env", "secret_file")
# RFC 7518 §6.2.2 / §6.3.2 / §6.4: members that only a private (or symmetric) key has.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_JWK_CURVES = frozenset({"P-256", "P-384"})
MIN_RSA_BITS = 2048


def _public_jwks(
    value: object, path: str, problems: list[tuple[str, str]]
) -> tuple[str, ...]:
    """The client's registered public keys, each checked and kept as canonical JSON."""
    from jwt import PyJWK
    from jwt.exceptions import PyJWKError

    if not isinstance(value, list) or not value:
        problems.append((path, "must be a non-empty array of public JWK tables"))
        return ()
    keys: list[str] = []
    kids: set[str] = set()
    for index, jwk in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(jwk, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in jwk.items()
        ):
            problems.append((where, "must be a table of string members (a JWK)"))
            continue
        if _PRIVATE_MEMBERS & set(jwk):  # the message names members, never their values
            problems.append((where, "holds private key members: register the public key only"))
            continue
        kid = jwk.get("kid", "")
        if kid in kids:
            problems.append((f"{where}.kid", f"duplicate kid {kid!r}"))
            continue
        kids.add(kid)
        if jwk.get("kty") not in ("RSA", "EC") or (
            jwk.get("kty") == "EC" and jwk.get("crv") not in _JWK_CURVES
        ):
            problems.append((where, "must be an RSA key or an EC key on P-256 or P-384"))
            continue
        try:
            parsed = PyJWK(jwk)
        except PyJWKError as exc:
            problems.append((where, f"is not a usable JWK: {exc}"))
            continue
        key_size = getattr(parsed.key, "key_size", MIN_RSA_BITS)
        if jwk["kty"] == "RSA" and key_size < MIN_RSA_BITS:
            problems.append((where, f"RSA keys must have at least {MIN_RSA_BITS} bits"))
            continue
        keys.append(json.dumps(jwk, sort_keys=True, separators=(",", ":")))
    return tuple(keys)


def _allowed(
    value: object, path: str, problems: list[tuple[str, str]], *, scope: bool
) -> frozenset[str] | None:
    """A list of allowed values; `["*"]` (alone) means any. Returns None for any."""
    if value is None:
        problems.append((path, 'is required: a list of strings, or ["*"] for any'))
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append((path, 'must be a list of non-empty strings, or ["*"] for any'))
        return frozenset()
    if ANY in value:
        if len(value) != 1:
            problems.append((path, '"*" must be the only entry'))
        return None
    if scope:
        for v in value:
            if not SCOPE_TOKEN.fullmatch(v):
                problems.append((path, f"{v!r} is not a valid scope token (RFC 6749 §3.3)"))
    return frozenset(value)


def _is_http_url(text: str) -> bool:
    return re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", text) is not None
