"""Outbound proxies: `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`, read once at start-up.

Hand-written rather than aiohttp's `trust_env=True`, which reads the environment again
on every request (in a thread hop: `asyncio.to_thread(get_env_proxy_for_url)` on the
vault's hot path) and, since aiohttp 3.9, also sends `~/.netrc` credentials to any host
that has an entry there (checked on aiohttp 3.14). Here the config reads the variables
once (style lesson 4); the HTTP clients pass the chosen proxy explicitly per request.

The semantics are aiohttp's and urllib's (`getproxies_environment`,
`proxy_bypass_environment`), which curl and Go's net/http share, plus two things those
tools have and urllib lacks:

1. The proxy for a URL is the one for its scheme: `https_proxy` for https:// URLs (the
   connection is a CONNECT tunnel, TLS to the target end to end), `http_proxy` for
   http:// ones (absolute-form requests). The lowercase variable wins when both are set;
   a lowercase one set to "" turns the proxy off. There is no `ALL_PROXY` (aiohttp has
   none either).
2. A proxy URL is `http://[user:password@]host[:port]`; a bare `host:port` means http://.
   An https:// proxy (TLS to the proxy itself) is refused, as aiohttp's environment
   handling ignores one: a misconfiguration should be reported, never silently bypassed.
3. `NO_PROXY` is a comma-separated list, case-insensitive, spaces ignored. `*` bypasses
   the proxy for every host. A name matches itself and every name below it (`example.com`
   and `.example.com` both match `example.com` and `api.example.com`, never
   `badexample.com`). An IP address matches itself, and a CIDR block (`10.0.0.0/8`,
   `fd00::/8`) every address in it (as curl 7.86+ and Go do; urllib does not). An entry
   with a port (`vault.internal:8443`, `[::1]:8200`) matches only that port.
4. Loopback is not special: `localhost` or `127.0.0.1` goes through the proxy unless
   `NO_PROXY` names it, as with aiohttp and urllib (Go exempts loopback; curl does not).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import yarl

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Proxy:
    """One forward proxy: where it is, and its Basic credentials if the URL had some."""

    url: yarl.URL  # without credentials, so it can be shown
    authorization: str | None = field(default=None, repr=False)  # Proxy-Authorization


@dataclass(frozen=True, slots=True)
class Route:
    """How one request reaches its URL: the aiohttp arguments `proxy`, `proxy_headers`,
    and headers to add to the request's own.

    Proxy-Authorization goes with the CONNECT (`proxy_headers`) for https://, and on the
    request itself for an absolute-form http:// one: aiohttp 3.14 sends `proxy_headers`
    only with a CONNECT, and deprecates `proxy_auth`, the only way it would otherwise add
    the header to a plain-http request."""

    proxy: yarl.URL | None = None
    proxy_headers: Mapping[str, str] | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


DIRECT_ROUTE = Route()


@dataclass(frozen=True, slots=True)
class Bypass:
    """One `NO_PROXY` entry (rule 3): a name suffix or an address block, maybe a port."""

    name: str | None = None  # lowercase, without a leading dot
    network: IpNetwork | None = None
    port: int | None = None

    def matches(self, host: str, port: int | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return address.version == self.network.version and address in self.network
        return self.name is not None and (host == self.name or host.endswith("." + self.name))


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxies the environment names; `for_url` picks the one for a request."""

    http: Proxy | None = None
    https: Proxy | None = None
    bypass: tuple[Bypass, ...] = ()
    bypass_all: bool = False  # NO_PROXY=*

    def for_url(self, url: yarl.URL) -> Proxy | None:
        """The proxy a request to `url` goes through, or None for a direct connection."""
        proxy = self.https if url.scheme == "https" else self.http if url.scheme == "http" else None
        if proxy is None or self.bypass_all:
            return None
        host = (url.host or "").lower().rstrip(".")
        if any(entry.matches(host, url.port) for entry in self.bypass):
            return None
        return proxy

    def route(self, url: yarl.URL) -> Route:
        """`for_url` as the arguments of one aiohttp request."""
        proxy = self.for_url(url)
        if proxy is None:
            return DIRECT_ROUTE
        if proxy.authorization is None:
            return Route(proxy.url)
        credentials = {"Proxy-Authorization": proxy.authorization}
        if url.scheme == "https":
            return Route(proxy.url, proxy_headers=credentials)
        return Route(proxy.url, headers=credentials)


DIRECT = Proxies()


def proxies_from_environment(environ: Mapping[str, str]) -> tuple[Proxies, list[str]]:
    """The proxies `environ` names, and a problem per unusable variable (named by the
    variable actually read, e.g. `environment https_proxy: ...`)."""
    problems: list[str] = []
    chosen: dict[str, Proxy | None] = {}
    for scheme in ("http", "https"):
        name, value = _variable(environ, f"{scheme}_proxy")
        chosen[scheme] = None
        if value:
            try:
                chosen[scheme] = parse_proxy_url(value)
            except ValueError as exc:
                problems.append(f"environment {name}: {exc}")
    _, no_proxy = _variable(environ, "no_proxy")
    entries = [e.strip().lower() for e in (no_proxy or "").split(",")]
    entries = [e for e in entries if e]
    proxies = Proxies(
        http=chosen["http"],
        https=chosen["https"],
        bypass=tuple(b for b in (_bypass(e) for e in entries if e != "*") if b is not None),
        bypass_all="*" in entries,
    )
    return proxies, problems


def _variable(environ: Mapping[str, str], lower: str) -> tuple[str, str | None]:
    """Rule 1: the lowercase variable when set (even to ""), else the uppercase one."""
    if lower in environ:
        return lower, environ[lower].strip()
    upper = lower.upper()
    value = environ.get(upper)
    return upper, value.strip() if value is not None else None


def parse_proxy_url(value: str) -> Proxy:
    """Rule 2; ValueError says what is wrong without repeating the value (it may hold a
    password)."""
    text = value if "://" in value else f"http://{value}"
    try:
        url = yarl.URL(text)
        host = url.host
        url.port  # noqa: B018 - yarl raises here for a port that is not a number
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError("not a proxy URL (http://[user:password@]host[:port])") from exc
    if url.scheme == "https":
        raise ValueError("an https:// proxy is not supported: give its http:// address "
                         "(https:// targets still get TLS end to end, through CONNECT)")
    if url.scheme != "http" or not host:
        raise ValueError("not a proxy URL (http://[user:password@]host[:port])")
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise ValueError("a proxy URL has no path, query or fragment")
    authorization = None
    if url.user is not None:
        authorization = aiohttp.encode_basic_auth(url.user, url.password or "")
    return Proxy(url.with_user(None).with_password(None).with_path(""), authorization)


def _bypass(entry: str) -> Bypass | None:
    """Rule 3 for one entry; None for an entry that can match nothing (an empty name)."""
    host, port = entry, None
    if entry.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = entry[1:].partition("]")
        host = inside
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif entry.count(":") == 1:  # name:port or v4:port
        name, _, port_text = entry.partition(":")
        if port_text.isdigit():
            host, port = name, int(port_text)
    try:
        return Bypass(network=ipaddress.ip_network(host, strict=False), port=port)
    except ValueError:
        pass
    name = host.lstrip(".").rstrip(".")
    return Bypass(name=name, port=port) if name else None
