"""Listen addresses: `HOST:PORT` parsing shared by every server piigate runs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class AddressInUse(Exception):
    """A listen address could not be bound (another process holds it)."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """A host and port to bind; port 0 asks the kernel for a free port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """True for 127.0.0.0/8, ::1 and `localhost`."""
        return is_loopback_host(self.host)


def parse_listen(text: str) -> ListenAddress:
    """Parse `HOST:PORT` or `[V6HOST]:PORT`; raise ValueError with a readable message."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port_text!r}")
    return ListenAddress(host, int(port_text))


def is_loopback_host(host: str) -> bool:
    """True when `host` names this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_Scope = tuple[str, str | None]  # ("4" | "6", address or None for the wildcard) | ("name", n)


def _scopes(host: str) -> frozenset[_Scope]:
    """What binding `host` takes. `::` is taken as dual-stack (grpc binds it so, IPv4
    included); `0.0.0.0` is IPv4 only; `localhost` is both loopbacks; another name could
    resolve to anything, so it is only itself."""
    if host in ("", "::"):
        return frozenset({("4", None), ("6", None)})
    if host == "localhost":
        return frozenset({("4", "127.0.0.1"), ("6", "::1")})
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return frozenset({("name", host.lower())})
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return frozenset({(str(address.version), None)})
    return frozenset({(str(address.version), str(address))})


def _overlap(a: _Scope, b: _Scope) -> bool:
    (kind_a, addr_a), (kind_b, addr_b) = a, b
    if "name" in (kind_a, kind_b):  # a name may resolve to any address, or a wildcard's
        return a == b or (kind_a != "name" and addr_a is None) or (
            kind_b != "name" and addr_b is None)
    return kind_a == kind_b and (addr_a is None or addr_b is None or addr_a == addr_b)


def listeners_clash(a: ListenAddress, b: ListenAddress) -> bool:
    """Whether two listeners would ask for the same socket: the same port (port 0 never
    clashes, the kernel picks a free one each time) on addresses that overlap, wildcards
    of either family included (`0.0.0.0` and `[::]` take every address of theirs)."""
    return a.port == b.port != 0 and any(
        _overlap(x, y) for x in _scopes(a.host) for y in _scopes(b.host)
    )
