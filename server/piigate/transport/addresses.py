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
