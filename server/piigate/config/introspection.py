"""The `token_format = "opaque"` keys of an `[[issuers]]` table: how piigate introspects
that issuer's opaque access tokens (RFC 7662), and how it tells them from other tokens.

    token_format = "opaque"                    # default "jwt"
    introspection_endpoint = "https://as.example.com/oauth2/introspect"   # or discovery = true
    introspection_client_id = "piigate"
    introspection_client_secret_file = "secrets/introspect.secret"    # client_secret_basic, or
    # introspection_private_key_file = "keys/piigate.pem"             # private_key_jwt
    # introspection_key_id = "piigate-1"          # the assertion's kid
    # introspection_algorithm = "RS256"           # RS256 | RS384 | ES256 | ES384
    # introspection_assertion_audience = "..."    # default: the introspection endpoint URL
    introspection_cache_s = 60                   # answers kept at most this long (0: never)
    introspection_timeout_ms = 3000
    # opaque_token_prefix = "ehr_"               # needed when several opaque issuers

The client authentication method follows from the credential given: a secret is
`client_secret_basic`, a private key `private_key_jwt`; exactly one. The key is loaded
here, so a PEM that does not fit its algorithm stops start-up like any other mistake.

Which issuer an opaque token belongs to cannot be read from the token: a token starting
with an issuer's `opaque_token_prefix` goes to that issuer; any other token that is not
three dot-separated segments (a JWT) goes to the one opaque issuer without a prefix, if
there is one. So at most one opaque issuer may go without a prefix, and prefixes differ.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from piigate.config.model import IntrospectionConfig, IssuerConfig
from piigate.config.reader import Reader, http_url, milliseconds, non_empty
from piigate_client.client_auth import ASSERTION_ALGORITHMS, PrivateKeyJwt

TOKEN_FORMATS = ("jwt", "opaque")
MAX_CACHE_S = 3600
#: RFC 6750 §2.1 b64token, the characters a bearer token is made of; a prefix is one too.
PREFIX = re.compile(r"^[A-Za-z0-9\-._~+/]{1,64}$")
OPAQUE_KEYS = {
    "token_format", "introspection_endpoint", "introspection_client_id",
    "introspection_client_secret_env", "introspection_client_secret_file",
    "introspection_private_key_env", "introspection_private_key_file", "introspection_key_id",
    "introspection_algorithm", "introspection_assertion_audience", "introspection_cache_s",
    "introspection_timeout_ms", "opaque_token_prefix",
}  # fmt: skip
#: Keys that describe a JWT issuer's keys: meaningless (so refused) for an opaque one.
JWT_ONLY_KEYS = (
    "jwks_uri", "algorithms", "jwks_default_ttl_s", "jwks_min_ttl_s", "jwks_max_ttl_s",
    "jwks_stale_if_error_s", "jwks_unknown_kid_cooldown_s", "jwks_timeout_ms",
)  # fmt: skip
#: `typ` rules that read the payload alone (an introspection answer has no JOSE header).
OPAQUE_TYP_RULES = ("any", "keycloak", "cognito")


def read_token_format(r: Reader, t: Mapping[str, Any], p: str) -> str:
    """`token_format`, and a problem for every key that does not apply to it."""
    token_format = r.get(t, "token_format", p, str, "jwt")
    if token_format not in TOKEN_FORMATS:
        r.problem(f"{p}.token_format", f"must be one of {', '.join(TOKEN_FORMATS)}")
        return "jwt"
    opaque = token_format == "opaque"  # noqa: S105 - a format, not a secret
    misplaced = JWT_ONLY_KEYS if opaque else sorted(OPAQUE_KEYS - {"token_format"})
    for key in misplaced:
        if key in t:
            other = "jwt" if opaque else "opaque"
            r.problem(f"{p}.{key}", f'applies only to token_format = "{other}"')
    return token_format


def read_opaque_typ(r: Reader, t: Mapping[str, Any], p: str, preset_typ: str) -> str:
    """An opaque issuer's `typ` rule: one that reads the answer's members (`at+jwt` is a
    JOSE header rule, and an introspection answer has no header)."""
    default = preset_typ if preset_typ in OPAQUE_TYP_RULES else "any"
    typ = r.get(t, "typ", p, str, default)
    if typ not in OPAQUE_TYP_RULES:
        r.problem(f"{p}.typ", f"must be one of {', '.join(OPAQUE_TYP_RULES)} for an opaque "
                  "issuer (at+jwt is a JWT header rule)")
        return default
    return typ


def read_introspection(r: Reader, t: Mapping[str, Any], p: str, issuer: str) -> (
    IntrospectionConfig | None
):
    """The introspection settings of an opaque issuer's table."""
    endpoint = _endpoint(r, t, p, issuer)
    client_id = r.get(t, "introspection_client_id", p, str, None, non_empty)
    secret_keys = [k for k in ("introspection_client_secret_env",
                               "introspection_client_secret_file") if k in t]
    key_keys = [k for k in ("introspection_private_key_env",
                            "introspection_private_key_file") if k in t]
    if bool(secret_keys) == bool(key_keys):
        r.problem(f"{p}.introspection_client_secret_file", "give piigate's introspection "
                  "credential: introspection_client_secret_{env,file} (client_secret_basic) "
                  "or introspection_private_key_{env,file} (private_key_jwt), exactly one")
        return None
    algorithm = r.get(t, "introspection_algorithm", p, str, "RS256")
    if algorithm not in ASSERTION_ALGORITHMS:
        r.problem(f"{p}.introspection_algorithm", f"must be one of "
                  f"{', '.join(ASSERTION_ALGORITHMS)}")
    key_id = (r.get(t, "introspection_key_id", p, str, None, non_empty)
              if "introspection_key_id" in t else None)
    secret = private_key = ""
    if secret_keys:
        secret = r.secret(t, "introspection_client_secret", p)
        for key in ("introspection_key_id", "introspection_algorithm",
                    "introspection_assertion_audience"):
            if key in t:
                r.problem(f"{p}.{key}", "applies only to a private key (private_key_jwt)")
    else:
        private_key = r.secret(t, "introspection_private_key", p)
        if private_key and algorithm in ASSERTION_ALGORITHMS:
            _check_private_key(r, f"{p}.{key_keys[0]}", private_key, algorithm)
    audience = None
    if "introspection_assertion_audience" in t:
        audience = r.get(t, "introspection_assertion_audience", p, str, None, non_empty)
    prefix = None
    if "opaque_token_prefix" in t:
        prefix = r.get(t, "opaque_token_prefix", p, str, None, lambda v: None if PREFIX.match(v)
                       else "must be 1 to 64 characters of A-Z a-z 0-9 - . _ ~ + /")
    return IntrospectionConfig(
        endpoint=endpoint,
        client_id=client_id or "",
        client_secret=secret,
        private_key=private_key,
        key_id=key_id,
        algorithm=algorithm,
        assertion_audience=audience,
        cache_s=r.get(t, "introspection_cache_s", p, float, 60.0, lambda v: None
                      if 0 <= v <= MAX_CACHE_S else f"must be from 0 to {MAX_CACHE_S} seconds"),
        timeout_s=r.get(t, "introspection_timeout_ms", p, int, 3000, milliseconds) / 1000,
        token_prefix=prefix,
    )


def check_opaque_routing(r: Reader, issuers: Sequence[IssuerConfig]) -> None:
    """Every opaque token must have exactly one issuer to go to (see the module doc)."""
    opaque = [i for i in issuers if i.introspection is not None]
    unprefixed = [i.name for i in opaque if i.introspection and i.introspection.token_prefix
                  is None]
    if len(unprefixed) > 1:
        r.problem("issuers", f"opaque issuers {', '.join(map(repr, unprefixed))} have no "
                  "opaque_token_prefix: all but one need one, so each token has one issuer")
    prefixes = Counter(i.introspection.token_prefix for i in opaque
                       if i.introspection and i.introspection.token_prefix)
    for prefix in sorted(p for p, n in prefixes.items() if n > 1):
        r.problem("issuers", f"opaque_token_prefix {prefix!r} is configured twice")


def _endpoint(r: Reader, t: Mapping[str, Any], p: str, issuer: str) -> str | None:
    discovery = r.get(t, "discovery", p, bool, False)
    if discovery == ("introspection_endpoint" in t):
        r.problem(f"{p}.introspection_endpoint", "give introspection_endpoint or "
                  "discovery = true (read from ISSUER/.well-known/openid-configuration), "
                  "exactly one")
        return None
    if discovery:
        if issuer and (message := http_url(issuer)):
            r.problem(f"{p}.issuer", f"{message} (discovery fetches "
                      "ISSUER/.well-known/openid-configuration)")
        return None
    return r.get(t, "introspection_endpoint", p, str, None, http_url)


def _check_private_key(r: Reader, path: str, pem: str, algorithm: str) -> None:
    try:
        PrivateKeyJwt(pem, algorithm=algorithm)
    except Exception as exc:  # a hostile file must be a problem, never a crash
        # Never the key's text: only whether it does not fit or is not a usable PEM
        # (ValueError, TypeError for an encrypted one, UnsupportedAlgorithm, ...).
        fits = isinstance(exc, ValueError) and "does not fit" in str(exc)
        detail = "does not fit the algorithm" if fits else "is not a usable PEM private key"
        r.problem(path, f"{detail} ({algorithm}, unencrypted PEM)")
