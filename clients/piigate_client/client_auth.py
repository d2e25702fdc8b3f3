"""How a client authenticates to the token endpoint: `client_secret_basic`,
`client_secret_post` (RFC 6749 §2.3.1) and `private_key_jwt` (RFC 7523 §2.2, the method
SMART Backend Services require).

Each method turns (client id, token endpoint URL) into the headers and form parameters to
add to the token request. No I/O. `PrivateKeyJwt` needs PyJWT and cryptography, the
`piigate-client[jwt]` extra; they are imported only when such a credential is built, so
the package itself depends on grpcio, grpcio-status, protobuf and
googleapis-common-protos alone.
"""

from __future__ import annotations

import base64
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
# SMART Backend Services: an assertion's exp at most five minutes ahead.
MAX_ASSERTION_LIFETIME_S = 300


class ClientAuthentication(Protocol):
    """A token-endpoint authentication method."""

    @property
    def method(self) -> str:
        """Its registered name (RFC 8414 `token_endpoint_auth_methods_supported`)."""
        ...

    def authenticate(
        self, client_id: str, token_url: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The (headers, form parameters) that authenticate `client_id` to `token_url`."""
        ...


@dataclass(frozen=True)
class ClientSecretBasic:
    """HTTP Basic with the client id and secret, each form-urlencoded first (§2.3.1)."""

    secret: str = field(repr=False)
    method: str = "client_secret_basic"

    def authenticate(
        self, client_id: str, token_url: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        pair = f"{_form(client_id)}:{_form(self.secret)}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}, {}


@dataclass(frozen=True)
class ClientSecretPost:
    """`client_id` and `client_secret` in the request body (§2.3.1; servers MAY support it)."""

    secret: str = field(repr=False)
    method: str = "client_secret_post"

    def authenticate(
        self, client_id: str, token_url: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {"client_id": client_id, "client_secret": self.secret}


class PrivateKeyJwt:
    """A fresh signed assertion per token request (RFC 7523 §2.2 and §3): `iss` = `sub` =
    the client id, `aud` = the token endpoint URL, a random `jti`, `iat` and a short `exp`,
    with the key's `kid` in the header so the server picks the registered key.

    `private_key` is a PEM (RSA for RS256/RS384, EC P-256/P-384 for ES256/ES384).
    """

    method = "private_key_jwt"

    def __init__(
        self,
        private_key: str | bytes,
        *,
        algorithm: str = "RS256",
        key_id: str | None = None,
        lifetime_s: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ASSERTION_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ASSERTION_ALGORITHMS)}")
        if not 0 < lifetime_s <= MAX_ASSERTION_LIFETIME_S:
            raise ValueError(f"lifetime_s must be from 1 to {MAX_ASSERTION_LIFETIME_S}")
        try:
            import jwt
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_private_key
        except ImportError as exc:
            raise ImportError(
                "private_key_jwt needs PyJWT and cryptography: install piigate-client[jwt]"
            ) from exc
        pem = private_key.encode() if isinstance(private_key, str) else private_key
        self._key: Any = load_pem_private_key(pem, password=None)
        self._jwt: Any = jwt
        self._algorithm = algorithm
        self._key_id = key_id
        self._lifetime_s = lifetime_s
        self._clock = clock
        curve = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}.get(algorithm)
        fits = (
            isinstance(self._key, ec.EllipticCurvePrivateKey)
            and isinstance(self._key.curve, curve)
            if curve is not None
            else isinstance(self._key, rsa.RSAPrivateKey) and self._key.key_size >= 2048
        )
        if not fits:
            raise ValueError(f"the private key does not fit {algorithm}")

    def __repr__(self) -> str:  # never the key
        return f"PrivateKeyJwt(algorithm={self._algorithm!r}, key_id={self._key_id!r})"

    def assertion(self, client_id: str, token_url: str) -> str:
        """A new signed assertion for one token request."""
        now = int(self._clock())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + self._lifetime_s,
        }
        headers: dict[str, str] = {"typ": "JWT"}
        if self._key_id is not None:
            headers["kid"] = self._key_id
        token: str = self._jwt.encode(claims, self._key, algorithm=self._algorithm,
                                      headers=headers)
        return token

    def authenticate(
        self, client_id: str, token_url: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.assertion(client_id, token_url),
        }


def _form(value: str) -> str:
    return urllib.parse.quote_plus(value)
