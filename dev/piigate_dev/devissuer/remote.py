"""A client of a running dev issuer: its `iss` value and `POST /dev/users/token`.

`RemoteIssuer` and the in-process `DevIssuer` both satisfy `UserTokenSource`, which is
what `migration.migrate_user` and `piigate-dev issue-token` need.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from piigate_dev.devissuer.claims import UserTokenRequest

_TIMEOUT = aiohttp.ClientTimeout(total=10)


class UserTokenSource(Protocol):
    """Something that mints end-user access tokens for one issuer."""

    async def issuer_id(self) -> str:
        """The `iss` value the tokens carry."""
        ...

    async def user_token(self, request: UserTokenRequest) -> str:
        """A signed access token for `request`."""
        ...


class IssuerCallFailed(Exception):
    """The issuer refused a call or could not be reached; the message has no token."""

    def __init__(self, what: str, status: int | None = None, error: str | None = None) -> None:
        detail = ", ".join(
            part for part in (f"status {status}" if status else "", error or "") if part
        )
        super().__init__(f"{what} failed" + (f" ({detail})" if detail else ""))
        self.status = status
        self.error = error


class RemoteIssuer:
    """A dev issuer reached over HTTP at `base_url` (e.g. `http://127.0.0.1:9000`)."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self._http = http
        self.base_url = base_url.rstrip("/")
        self._issuer: str | None = None

    async def issuer_id(self) -> str:
        """The issuer string from its discovery document (fetched once)."""
        if self._issuer is None:
            document = await self._call("GET", "/.well-known/openid-configuration", None)
            issuer = document.get("issuer")
            if not isinstance(issuer, str) or not issuer:
                raise IssuerCallFailed("reading the discovery document", error="no issuer")
            self._issuer = issuer
        return self._issuer

    async def user_token(self, request: UserTokenRequest) -> str:
        """`POST /dev/users/token` and return the access token."""
        return await self._user_token(request.to_json())

    async def opaque_user_token(self, request: UserTokenRequest) -> str:
        """The same, as an opaque token the issuer answers for by introspection."""
        return await self._user_token({**request.to_json(), "token_format": "opaque"})

    async def _user_token(self, body: dict[str, object]) -> str:
        answer = await self._call("POST", "/dev/users/token", body)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise IssuerCallFailed("issuing a user token", error="no access_token in the answer")
        return token

    async def _call(self, method: str, path: str, body: object) -> dict[str, object]:
        what = f"{method} {path}"
        try:
            async with self._http.request(
                method, self.base_url + path, json=body, timeout=_TIMEOUT, allow_redirects=False
            ) as response:
                payload = await response.json(content_type=None)
                if response.status != 200:
                    error = payload.get("error") if isinstance(payload, dict) else None
                    description = (
                        payload.get("error_description") if isinstance(payload, dict) else None
                    )
                    text = ": ".join(str(p) for p in (error, description) if p) or None
                    raise IssuerCallFailed(what, response.status, text)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IssuerCallFailed(what, error=type(exc).__name__) from exc
        if not isinstance(payload, dict):
            raise IssuerCallFailed(what, error="the answer is not a JSON object")
        return payload
