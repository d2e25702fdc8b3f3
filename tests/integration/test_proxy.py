"""Outbound proxies through a real forward proxy on loopback (tests.support.httpproxy):
JWKS fetches and vault calls go through it when HTTP_PROXY / HTTPS_PROXY name it, and
straight to their host when NO_PROXY does; the environment is the gateway's config's."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
import yarl

from piigate.errors import IssuerKeysUnavailable
from piigate.tokens.jwks import JwksCache, JwksCacheSettings
from piigate.transport.proxies import proxies_from_environment
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from tests.e2e.test_vault_tls import migration_context, read_alice, vault_server_context
from tests.support.devissuer import running_dev_issuer
from tests.support.httpproxy import running_proxy
from tests.support.pki import make_ca, server_cert
from tests.support.stack import Stack, running_stack

NO_RETRIES = ("grpc.service_config", json.dumps({"methodConfig": []}))
MASKED = [("ssn", "***-**-1234"), ("email", "a***@example.com"), ("user_id", "")]


def jwks_path(stack: Stack) -> str:
    return str(yarl.URL(stack.issuer.jwks_uri))


async def test_the_gateway_fetches_keys_and_reads_the_vault_through_http_proxy() -> None:
    async with running_proxy() as proxy, running_stack(
        environ_extra={"HTTP_PROXY": proxy.url}
    ) as stack:
        assert await read_alice(stack) == MASKED
        # Absolute-form requests (RFC 9112 §3.2.2): the proxy saw each full URL.
        assert jwks_path(stack) in proxy.targets("GET")
        vault_calls = [t for t in proxy.targets("GET")
                       if t.startswith(stack.vault.base_url + "/api/pvlt/1.0/data/collections/")]
        assert len(vault_calls) == 1
        assert "CONNECT" not in {p.method for p in proxy.passed}


async def test_no_proxy_naming_the_host_goes_direct() -> None:
    async with running_proxy() as proxy, running_stack(
        environ_extra={"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url,
                       "NO_PROXY": "example.com, 127.0.0.1"}
    ) as stack:
        assert await read_alice(stack) == MASKED
        assert proxy.passed == []


async def test_no_proxy_by_cidr_goes_direct() -> None:
    async with running_proxy() as proxy, running_stack(
        environ_extra={"http_proxy": proxy.url, "no_proxy": "127.0.0.0/8"}
    ) as stack:
        assert await read_alice(stack) == MASKED
        assert proxy.passed == []


async def test_https_goes_through_a_connect_tunnel_with_tls_end_to_end(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    async with running_proxy(credentials=("piigate", "tunnel-pass")) as proxy, running_stack(
        vault_ssl=vault_server_context(server_cert(ca), None),
        migration_ssl=migration_context(ca, None),
        gateway_overrides={"vault": {"ca_file": str(ca.cert_file)}},
        environ_extra={"HTTPS_PROXY": proxy.url},  # the issuer is http: it goes direct
    ) as stack:
        assert await read_alice(stack) == MASKED
        vault = yarl.URL(stack.vault.base_url)
        assert proxy.targets("CONNECT") == [f"{vault.host}:{vault.port}"]
        assert all(p.authorized for p in proxy.passed)  # credentials went with the CONNECT
        assert proxy.targets("GET") == []  # the plain-http issuer has no HTTP_PROXY


async def test_proxy_credentials_from_the_url_are_sent() -> None:
    async with running_proxy(credentials=("piigate", "pr0xy-pass")) as proxy, running_stack(
        environ_extra={"HTTP_PROXY": proxy.url}
    ) as stack:
        assert await read_alice(stack) == MASKED
        assert proxy.passed
        assert all(p.authorized for p in proxy.passed)
        assert "pr0xy-pass" not in repr(stack.config)


async def test_a_proxy_refusing_the_tunnel_is_vault_unavailable(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    async with running_proxy(credentials=("piigate", "right")) as proxy, running_stack(
        vault_ssl=vault_server_context(server_cert(ca), None),
        migration_ssl=migration_context(ca, None),
        gateway_overrides={"vault": {"ca_file": str(ca.cert_file)}},
        environ_extra={"HTTPS_PROXY": proxy.url.replace(":right@", ":wrong@")},
    ) as stack:
        token = await stack.caller_token("support-tool")
        async with AsyncDetokenizationClient(stack.target, lambda: token, timeout_s=10,
                                             options=[NO_RETRIES]) as support:
            with pytest.raises(PiigateError) as caught:
                await support.detokenize(stack.user_token("alice"))
        assert caught.value.reason == "VAULT_UNAVAILABLE"
        assert [p.method for p in proxy.passed] == ["CONNECT"]
        assert not proxy.passed[0].authorized


async def test_a_jwks_fetch_the_proxy_refuses_leaves_the_issuer_without_keys() -> None:
    async with running_proxy(credentials=("piigate", "right")) as proxy, running_dev_issuer(
    ) as issuer, aiohttp.ClientSession() as session:
        for password, fetched in (("wrong", False), ("right", True)):
            environ = {"HTTP_PROXY": proxy.url.replace(":right@", f":{password}@")}
            proxies, problems = proxies_from_environment(environ)
            assert problems == []
            cache = JwksCache(issuer.jwks_uri, session, time.time,
                              JwksCacheSettings(proxies=proxies))
            if fetched:
                assert len(await cache.prime()) > 0
            else:
                with pytest.raises(IssuerKeysUnavailable):
                    await cache.prime()
                assert cache.status().last_error == "http_status_407"
            await cache.aclose()
        assert [(p.target, p.authorized) for p in proxy.passed] == [
            (issuer.jwks_uri, False), (issuer.jwks_uri, True)]
