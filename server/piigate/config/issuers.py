"""The `[[issuers]]` tables: which identity providers' tokens piigate trusts, and how.

`kind` picks a preset (piigate.config.presets) whose defaults any key in the table overrides.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, get_args

from piigate.config.introspection import (
    OPAQUE_KEYS,
    check_opaque_routing,
    read_introspection,
    read_opaque_typ,
    read_token_format,
)
from piigate.config.model import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_PII_TOKEN_CLAIM,
    IssuerConfig,
    JwksConfig,
)
from piigate.config.presets import PRESETS, IssuerKind, jwks_uri_for
from piigate.config.reader import Reader, http_url, milliseconds, non_empty, one_of, positive

TYP_RULES = ("at+jwt", "any", "keycloak", "cognito")
KINDS: tuple[str, ...] = get_args(IssuerKind)
_KEYS = {
    "name", "kind", "issuer", "jwks_uri", "discovery", "algorithms", "typ", "leeway_s",
    "max_lifetime_s", "max_age_s", "pii_token_claim", "client_id_claims", "scope_claims",
    "audience_claims", "jwks_default_ttl_s", "jwks_min_ttl_s", "jwks_max_ttl_s",
    "jwks_stale_if_error_s", "jwks_unknown_kid_cooldown_s", "jwks_timeout_ms", "denied_claims",
    "binding_key_env", "binding_key_file",
}  # fmt: skip
_KEYS |= OPAQUE_KEYS  # token_format = "opaque" (piigate.config.introspection)


def read_issuers(r: Reader, data: Mapping[str, Any]) -> tuple[IssuerConfig, ...]:
    raw = data.get("issuers")
    if not isinstance(raw, list) or not raw:
        r.problem("issuers", "at least one [[issuers]] table is required")
        return ()
    issuers: list[IssuerConfig] = []
    for i, table in enumerate(raw):
        path = f"issuers[{i}]"
        if not isinstance(table, dict):
            r.problem(path, "must be a table")
            continue
        issuer = _read_issuer(r, table, path)
        if issuer is not None:
            issuers.append(issuer)
    for attribute, what in (("name", "issuer name"), ("issuer", "issuer")):
        # One pass (a file may hold thousands of issuers); a missing name is already
        # reported as required, so only strings are counted.
        counts = Counter(v for i in issuers if isinstance(v := getattr(i, attribute), str) and v)
        for value in sorted(v for v, n in counts.items() if n > 1):
            r.problem("issuers", f"{what} {value!r} is configured twice")
    check_opaque_routing(r, issuers)
    return tuple(issuers)


def _read_issuer(r: Reader, t: Mapping[str, Any], p: str) -> IssuerConfig | None:
    r.unknown_keys(t, _KEYS, p)
    # An unknown kind is one problem. The rest of the table is still read (its other
    # mistakes show in the same pass) under no provider's rules, and the issuer still
    # counts as configured, so `[caller] issuers` naming it adds no second, misleading one.
    kind = r.get(t, "kind", p, str, "generic", one_of(*KINDS))
    known: IssuerKind | None = kind if kind in KINDS else None  # type: ignore[assignment]
    preset = PRESETS[known or "generic"]
    issuer = r.get(t, "issuer", p, str, None, non_empty) or ""
    if preset.issuer_trailing_slash and issuer and not issuer.endswith("/"):
        r.problem(f"{p}.issuer", f"{kind} issuers end with '/': use {issuer + '/'!r}, exactly "
                  "as the tokens' iss claim")
    opaque = read_token_format(r, t, p) == "opaque"
    return IssuerConfig(
        name=r.get(t, "name", p, str, None, non_empty),
        kind=known or "generic",  # never used with an unknown kind: the file has a problem
        issuer=issuer,
        jwks_uri=None if opaque else _jwks_uri(r, t, p, known, issuer),
        algorithms=_algorithms(r, t, p),
        typ=read_opaque_typ(r, t, p, preset.typ) if opaque  # type: ignore[arg-type]
        else _choice(r, t, "typ", p, preset.typ, TYP_RULES),
        leeway_s=r.get(t, "leeway_s", p, int, 30, lambda v: None if 0 <= v <= 60
                       else "must be between 0 and 60 seconds"),
        max_lifetime_s=r.get(t, "max_lifetime_s", p, int, 86400, positive),
        max_age_s=r.get(t, "max_age_s", p, int, None, positive) if "max_age_s" in t else None,
        pii_token_claim=_pii_token_claim(r, t, p),
        client_id_claims=r.strings(t, "client_id_claims", p, preset.client_id_claims),
        scope_claims=r.strings(t, "scope_claims", p, preset.scope_claims),
        audience_claims=r.strings(t, "audience_claims", p, preset.audience_claims),
        caller_audience_in_token=preset.caller_audience_in_token,
        jwks=_jwks(r, t, p),
        denied_claims=r.strings(t, "denied_claims", p, ()),
        binding_key=r.secret(t, "binding_key", p).encode() or None
        if "binding_key_env" in t or "binding_key_file" in t else None,
        token_format="opaque" if opaque else "jwt",
        introspection=read_introspection(r, t, p, issuer) if opaque else None,
    )


def _jwks_uri(
    r: Reader, t: Mapping[str, Any], p: str, kind: IssuerKind | None, issuer: str
) -> str | None:
    discovery = r.get(t, "discovery", p, bool, False)
    if discovery and "jwks_uri" in t:
        r.problem(f"{p}.discovery", "give jwks_uri or discovery = true, not both")
    if discovery:
        if issuer and (message := http_url(issuer)):
            r.problem(f"{p}.issuer", f"{message} (discovery fetches "
                      "ISSUER/.well-known/openid-configuration)")
        return None  # discovered at start-up from the issuer's openid-configuration
    if "jwks_uri" in t:
        return r.get(t, "jwks_uri", p, str, None, http_url)
    if kind is None:
        return None  # an unknown kind, already reported: it names no JWKS location
    derived = jwks_uri_for(kind, issuer) if issuer else None
    if derived is None:
        r.problem(f"{p}.jwks_uri", f"is required for kind {kind} (or set discovery = true)")
    elif message := http_url(derived):
        r.problem(f"{p}.issuer", f"the {kind} JWKS location {derived!r} {message}")
    return derived


def _algorithms(r: Reader, t: Mapping[str, Any], p: str) -> tuple[str, ...]:
    algorithms = r.strings(t, "algorithms", p, ("RS256",))
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            r.problem(f"{p}.algorithms", f"{alg!r} is not allowed; use one of "
                      f"{', '.join(ASYMMETRIC_ALGORITHMS)} (no 'none', no HMAC)")
    return algorithms


def _choice(r: Reader, t: Mapping[str, Any], key: str, p: str, default: str,
            allowed: tuple[str, ...]) -> str:
    return r.get(t, key, p, str, default, one_of(*allowed))


# A name with a URI scheme (`https://example.com/pii_token`, `urn:acme:pii`) is a
# namespaced claim: one key, dots and all (Auth0 requires custom claims to be namespaced).
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
MAX_CLAIM_PATH = 8


def _pii_token_claim(r: Reader, t: Mapping[str, Any], p: str) -> tuple[str, ...]:
    """Where the subject token carries the vault token id, as a path of claim names: a
    string is one claim name, taken whole; a list walks into nested objects
    (`["app_metadata", "pii_token"]`, as Keycloak nests a mapper's dotted claim name).

    A dotted string that is not a URI (`app_metadata.pii_token`) reads like a path, but
    would be looked up as one flat name and match no token, so every call would fail
    with PII_TOKEN_CLAIM_MISSING. It is refused here with the two spellings that say
    what is meant: the path as a list, or the flat name with its dot as a list of one.
    """
    full = f"{p}.pii_token_claim"
    value = t.get("pii_token_claim", DEFAULT_PII_TOKEN_CLAIM)
    if isinstance(value, list):
        path = r.strings(t, "pii_token_claim", p)
        if not value:
            r.problem(full, "must name at least one claim")
        elif len(path) > MAX_CLAIM_PATH:
            r.problem(full, f"must be a path of at most {MAX_CLAIM_PATH} claim names")
        return path
    if not isinstance(value, str):
        r.problem(full, "must be a claim name (a string) or a path of claim names (a list)")
        return ()
    if not value:
        r.problem(full, "must not be empty")
    elif "." in value and not _URI_SCHEME.match(value):
        r.problem(full, f"{value!r} looks like a path but is one claim name: for the nested "
                  f"claim write {json.dumps(value.split('.'))}; for a claim whose name "
                  f"holds a dot write [{json.dumps(value)}]; a namespaced claim is a URL "
                  "such as 'https://example.com/pii_token'")
    return (value,)


def _jwks(r: Reader, t: Mapping[str, Any], p: str) -> JwksConfig:
    config = JwksConfig(
        default_ttl_s=r.get(t, "jwks_default_ttl_s", p, float, 600.0, positive),
        min_ttl_s=r.get(t, "jwks_min_ttl_s", p, float, 60.0, positive),
        max_ttl_s=r.get(t, "jwks_max_ttl_s", p, float, 86400.0, positive),
        stale_if_error_s=r.get(t, "jwks_stale_if_error_s", p, float, 3600.0,
                               lambda v: None if v >= 0 else "must be 0 or more"),
        unknown_kid_cooldown_s=r.get(t, "jwks_unknown_kid_cooldown_s", p, float, 30.0, positive),
        timeout_s=r.get(t, "jwks_timeout_ms", p, int, 3000, milliseconds) / 1000,
    )
    if config.min_ttl_s > config.max_ttl_s:
        r.problem(f"{p}.jwks_min_ttl_s", "must not exceed jwks_max_ttl_s")
    return config
