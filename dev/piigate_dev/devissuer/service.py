"""`DevIssuer`: config + key ring + clock -> signed tokens. The in-process signer.

The HTTP routes call it, and tests or the demo can call it directly
(`create_issuer_app(...)[ISSUER_KEY]`) to mint user tokens without a round trip.

The issuer string (`iss`) is, in order: `IssuerConfig.issuer`; else the base URL bound with
`bind_base_url` once the server knows its port (the CLI with a fixed port, the test helper);
else, for HTTP calls only, the request's own origin + `/` (as Keycloak derives its issuer
from the request host). Auth0 style: a trailing slash.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from piigate_dev.devissuer.claims import (
    TokenParts,
    UserTokenRequest,
    build_client_token,
    build_user_token,
)
from piigate_dev.devissuer.config import IssuerConfig
from piigate_dev.devissuer.keys import KeyRing
from piigate_dev.devissuer.oauth import Grant
from piigate_dev.devissuer.opaque import OpaqueTokens

Clock = Callable[[], float]


class IssuerUnbound(RuntimeError):
    """The issuer URL is not known yet: configure `issuer` or call `bind_base_url`."""


def issuer_from_base_url(base_url: str) -> str:
    """`http://127.0.0.1:PORT` -> `http://127.0.0.1:PORT/` (Auth0's trailing slash)."""
    return base_url.rstrip("/") + "/"


class DevIssuer:
    """Signs client-credentials and user access tokens with the key ring's current key, or
    issues them as opaque references (`opaque`, answered by introspection)."""

    def __init__(
        self,
        config: IssuerConfig,
        keys: KeyRing | None = None,
        clock: Clock = time.time,
        new_jti: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        self.config = config
        self.keys = keys if keys is not None else KeyRing(config.algorithm)
        self.clock = clock
        self._new_jti = new_jti
        self._bound: str | None = None
        self.opaque = OpaqueTokens()

    def __repr__(self) -> str:
        return f"DevIssuer(issuer={self.config.issuer or self._bound!r}, keys={self.keys!r})"

    def bind_base_url(self, base_url: str) -> None:
        """Record where the server listens; the issuer becomes `base_url/` unless configured."""
        self._bound = issuer_from_base_url(base_url)

    @property
    def issuer(self) -> str:
        """The `iss` value; raises IssuerUnbound before a URL is configured or bound."""
        issuer = self.config.issuer or self._bound
        if issuer is None:
            raise IssuerUnbound(
                "the issuer URL is unknown: configure `issuer` or bind the base URL"
            )
        return issuer

    def issuer_for(self, request_origin: str) -> str:
        """The `iss` value for an HTTP call arriving at `request_origin`."""
        return self.config.issuer or self._bound or issuer_from_base_url(request_origin)

    def user_token_parts(self, request: UserTokenRequest, issuer: str | None = None) -> TokenParts:
        """The unsigned user token (for inspection); `issuer` defaults to `self.issuer`."""
        key = self.keys.current
        return build_user_token(
            request,
            issuer=issuer or self.issuer,
            pii_claim=self.config.pii_claim,
            default_lifetime_s=self.config.user_token_lifetime_s,
            now=self.clock(),
            jti=self._new_jti(),
            kid=key.kid,
            alg=key.alg,
        )

    def sign_user_token(self, request: UserTokenRequest, issuer: str | None = None) -> str:
        """A signed end-user access token."""
        parts = self.user_token_parts(request, issuer)
        return self.keys.current.sign(parts.claims, parts.header)

    def opaque_user_token(self, request: UserTokenRequest, issuer: str | None = None) -> str:
        """An opaque end-user access token standing for the same claims."""
        return self.opaque.issue(self.user_token_parts(request, issuer).claims, self.clock())

    def sign_client_token(self, grant: Grant, issuer: str | None = None) -> tuple[str, int]:
        """A signed client-credentials token and its lifetime in seconds."""
        parts = self._client_token_parts(grant, issuer)
        return self.keys.current.sign(parts.claims, parts.header), (
            self.config.client_token_lifetime_s)

    def opaque_client_token(self, grant: Grant, issuer: str | None = None) -> tuple[str, int]:
        """An opaque client-credentials token and its lifetime in seconds."""
        parts = self._client_token_parts(grant, issuer)
        return self.opaque.issue(parts.claims, self.clock()), self.config.client_token_lifetime_s

    def revoke(self, token: str) -> bool:
        """Revoke an opaque token (a JWT cannot be revoked here); whether it was live."""
        return self.opaque.revoke(token)

    def _client_token_parts(self, grant: Grant, issuer: str | None) -> TokenParts:
        key = self.keys.current
        lifetime = self.config.client_token_lifetime_s
        return build_client_token(
            issuer=issuer or self.issuer,
            client_id=grant.client_id,
            audience=grant.audience,
            scope=grant.scope,
            lifetime_s=lifetime,
            now=self.clock(),
            jti=self._new_jti(),
            kid=key.kid,
            alg=key.alg,
        )

    # The `UserTokenSource` interface used by `migration.migrate_user`.
    async def issuer_id(self) -> str:
        """The `iss` value tokens will carry."""
        return self.issuer

    async def user_token(self, request: UserTokenRequest) -> str:
        """A signed end-user access token (no I/O; async to match the remote source)."""
        return self.sign_user_token(request)
