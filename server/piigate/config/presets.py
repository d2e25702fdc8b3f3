"""Identity-provider presets: the defaults that match each provider's access-token shape.

An issuer's `kind` picks a preset; every value it sets can still be overridden in the
issuer's table. Facts per provider are in ../shared/reference/tokens-and-identity-providers.md;
where a provider's behaviour is unconfirmed there, the preset takes the stricter reading
that still accepts its real tokens.

The README's "Identity-provider presets" table lists what each preset sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IssuerKind = Literal["auth0", "keycloak", "cognito", "okta", "frontegg", "generic"]
TypRuleName = Literal["at+jwt", "any", "keycloak", "cognito"]


@dataclass(frozen=True, slots=True)
class Preset:
    """Defaults for one kind of identity provider."""

    jwks_path: str | None  # appended to the issuer URL (after stripping a trailing "/")
    client_id_claims: tuple[str, ...]
    scope_claims: tuple[str, ...]
    typ: TypRuleName
    # Where the token says who it is for. Cognito access tokens carry no `aud`; their
    # `client_id` names the app the user signed in to, which is what a profile accepts.
    audience_claims: tuple[str, ...]
    issuer_trailing_slash: bool | None  # True: Auth0's `iss` always ends in "/"
    # Cognito's client-credentials tokens carry no audience at all; a caller credential
    # from such an issuer is bound to piigate by a required scope instead.
    caller_audience_in_token: bool = True


PRESETS: dict[IssuerKind, Preset] = {
    # Auth0 signs access tokens `typ: JWT` unless the API opts into RFC 9068 (`at+jwt`);
    # an Auth0 ID token's `aud` is the client id, which no profile lists as an audience.
    "auth0": Preset("/.well-known/jwks.json", ("azp", "client_id"), ("scope", "permissions"),
                    "any", ("aud",), True),
    "keycloak": Preset("/protocol/openid-connect/certs", ("azp",), ("scope",),
                       "keycloak", ("aud",), None),
    "cognito": Preset("/.well-known/jwks.json", ("client_id",), ("scope",),
                      "cognito", ("client_id",), False, caller_audience_in_token=False),
    "okta": Preset("/v1/keys", ("cid",), ("scp",), "any", ("aud",), None),
    "frontegg": Preset("/.well-known/jwks.json", ("azp", "client_id"),
                       ("permissions", "scope"), "any", ("aud",), None),
    "generic": Preset(None, ("azp", "client_id", "cid"), ("scope", "scp"),
                      "at+jwt", ("aud",), None),
}


def jwks_uri_for(kind: IssuerKind, issuer: str) -> str | None:
    """The preset's JWKS location for `issuer`, or None when the kind has none."""
    path = PRESETS[kind].jwks_path
    return None if path is None else issuer.rstrip("/") + path
