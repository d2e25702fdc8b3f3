"""Proxy choice from the environment (piigate.transport.proxies): urllib/aiohttp semantics
plus CIDR and port entries in NO_PROXY; the environment read once, by the config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yarl

from piigate.config import ConfigError, parse_config
from piigate.transport.proxies import Proxies, proxies_from_environment
from tests.unit.test_config import ENV, minimal

PROXY = "http://proxy.internal:3128"


def chosen(environ: dict[str, str], url: str) -> str | None:
    proxies, problems = proxies_from_environment(environ)
    assert problems == []
    proxy = proxies.for_url(yarl.URL(url))
    return str(proxy.url) if proxy else None


def test_the_scheme_picks_the_variable() -> None:
    environ = {"HTTPS_PROXY": PROXY, "HTTP_PROXY": "http://plain.internal:8080"}
    assert chosen(environ, "https://idp.example.com/jwks") == PROXY
    assert chosen(environ, "http://127.0.0.1:9000/jwks") == "http://plain.internal:8080"
    assert chosen({"HTTP_PROXY": PROXY}, "https://idp.example.com/") is None


def test_lowercase_wins_and_an_empty_one_turns_the_proxy_off() -> None:
    both = {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}
    assert chosen(both, "https://idp.example.com/") == "http://lower:1"
    assert chosen({"https_proxy": "", "HTTPS_PROXY": PROXY}, "https://idp.example.com/") is None


def test_nothing_set_means_direct() -> None:
    assert chosen({}, "https://idp.example.com/") is None
    assert chosen({"ALL_PROXY": PROXY}, "https://idp.example.com/") is None  # not read


@pytest.mark.parametrize(("no_proxy", "url", "bypassed"), [
    ("example.com", "https://example.com/", True),
    ("example.com", "https://api.example.com/", True),
    (".example.com", "https://example.com/", True),
    ("example.com", "https://badexample.com/", False),
    ("EXAMPLE.com ,other", "https://Api.Example.COM/", True),
    ("*", "https://anything.example/", True),
    ("127.0.0.1", "https://127.0.0.1:8443/", True),
    ("127.0.0.1", "https://127.0.0.2:8443/", False),
    ("10.0.0.0/8", "https://10.20.30.40/", True),
    ("10.0.0.0/8", "https://11.0.0.1/", False),
    ("10.0.0.0/8", "https://ten.example/", False),
    ("fd00::/8", "https://[fd12::1]/", True),
    ("::1", "https://[::1]:8200/", True),
    ("[::1]:8200", "https://[::1]:8200/", True),
    ("[::1]:8200", "https://[::1]:8201/", False),
    ("vault.internal:8443", "https://vault.internal:8443/", True),
    ("vault.internal:8443", "https://vault.internal/", False),
    ("svc.cluster.local", "https://vault.vault.svc.cluster.local:8443/", True),
    ("", "https://example.com/", False),
    (" , ,", "https://example.com/", False),
])
def test_no_proxy_entries(no_proxy: str, url: str, bypassed: bool) -> None:
    environ = {"HTTPS_PROXY": PROXY, "NO_PROXY": no_proxy}
    assert (chosen(environ, url) is None) == bypassed


def test_loopback_is_not_special() -> None:
    # As aiohttp and urllib: loopback goes through the proxy unless NO_PROXY names it.
    assert chosen({"HTTP_PROXY": PROXY}, "http://127.0.0.1:9000/") == PROXY
    assert chosen({"HTTP_PROXY": PROXY}, "http://localhost:9000/") == PROXY
    assert chosen({"HTTP_PROXY": PROXY, "no_proxy": "localhost"}, "http://localhost:9/") is None


def test_credentials_become_basic_auth_and_never_show() -> None:
    proxies, _ = proxies_from_environment({"HTTPS_PROXY": "http://user:s3cret@proxy:3128"})
    basic = "Basic dXNlcjpzM2NyZXQ="  # user:s3cret
    tunnel = proxies.route(yarl.URL("https://idp.example.com/"))
    assert (str(tunnel.proxy), tunnel.proxy_headers, tunnel.headers) == (
        "http://proxy:3128", {"Proxy-Authorization": basic}, {})
    plain = proxies.route(yarl.URL("http://127.0.0.1:9000/"))  # no HTTP_PROXY: direct
    assert plain.proxy is None
    both, _ = proxies_from_environment({"HTTP_PROXY": "http://user:s3cret@proxy:3128"})
    absolute_form = both.route(yarl.URL("http://127.0.0.1:9000/"))
    assert (absolute_form.proxy_headers, absolute_form.headers) == (
        None, {"Proxy-Authorization": basic})  # aiohttp sends proxy_headers only on CONNECT
    for shown in (repr(proxies), repr(tunnel), repr(absolute_form)):
        assert "s3cret" not in shown
        assert basic not in shown


def test_a_bare_host_port_is_http() -> None:
    assert chosen({"HTTPS_PROXY": "proxy:3128"}, "https://idp.example.com/") == "http://proxy:3128"


@pytest.mark.parametrize(("value", "message"), [
    ("https://proxy:3128", "an https:// proxy is not supported"),
    ("socks5://proxy:1080", "not a proxy URL"),
    ("http://proxy:3128/path", "a proxy URL has no path"),
    ("http://:3128", "not a proxy URL"),
    ("http://proxy:port", "not a proxy URL"),
])
def test_an_unusable_proxy_is_a_config_problem(value: str, message: str) -> None:
    secret_value = value.replace("://", "://user:hunter2@")
    with pytest.raises(ConfigError) as caught:
        parse_config(minimal(), {**ENV, "https_proxy": secret_value}, Path("."))
    [problem] = caught.value.problems
    assert problem.startswith(f"environment https_proxy: {message}")
    assert "hunter2" not in problem


def test_the_config_reads_the_environment_once() -> None:
    environ = {**ENV, "HTTPS_PROXY": PROXY, "NO_PROXY": "internal"}
    config = parse_config(minimal(), environ, Path("."))
    environ["HTTPS_PROXY"] = "http://changed:1"
    assert config.proxies.https is not None
    assert str(config.proxies.https.url) == PROXY
    assert config.proxies.for_url(yarl.URL("https://vault.internal/")) is None
    assert parse_config(minimal(), ENV, Path(".")).proxies == Proxies()
