"""The HTTP layer's pure parts and the loopback guard on `/dev/*` (no socket needed)."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from piigate_dev.devissuer.api import create_issuer_app, discovery_document
from piigate_dev.devissuer.config import IssuerConfig


def test_discovery_document_uses_the_origin_for_endpoints() -> None:
    document = discovery_document("https://auth.example.com/", "http://127.0.0.1:9000", ["ES256"])
    assert document["issuer"] == "https://auth.example.com/"
    assert document["jwks_uri"] == "http://127.0.0.1:9000/.well-known/jwks.json"
    assert document["token_endpoint"] == "http://127.0.0.1:9000/oauth/token"
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]


async def call(app: web.Application, path: str, peer: str) -> web.StreamResponse:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    request = make_mocked_request("POST", path, app=app, transport=transport)
    match = await app.router.resolve(request)
    request._match_info = match  # what the server does before calling the handler
    match.add_app(app)
    return await match.handler(request)


@pytest.mark.parametrize("path", ["/dev/users/token", "/dev/keys/rotate", "/dev/keys/retire"])
async def test_dev_routes_refuse_remote_peers(path: str) -> None:
    app = await create_issuer_app(IssuerConfig(algorithm="EdDSA"))
    response = await call(app, path, "10.1.2.3")
    assert response.status == 403
    assert isinstance(response, web.Response)
    assert response.text is not None
    assert '"access_denied"' in response.text


async def test_dev_routes_answer_remote_peers_when_allowed() -> None:
    app = await create_issuer_app(IssuerConfig(algorithm="EdDSA"), allow_remote=True)
    response = await call(app, "/dev/keys/retire", "10.1.2.3")
    assert response.status == 200


async def test_loopback_peer_passes_the_guard() -> None:
    app = await create_issuer_app(IssuerConfig(algorithm="EdDSA"))
    response = await call(app, "/dev/keys/retire", "127.0.0.1")
    assert response.status == 200
