"""URLs piigate fetches: tokens.fetch.check_jwks_uri (a discovery document's `jwks_uri`,
a configured one) and the config's own check of them (config.reader.http_url).

Input: UTF-8 text (invalid bytes replaced). Documented errors: ValueError from
check_jwks_uri; http_url never raises (it answers a problem or None). Oracles: an
accepted URI is absolute, carries no credentials, and is https, or http to a loopback
host only; and a URI the config accepts is one the fetcher accepts, so a file that
passes `piigate check-config` does not fail at start-up.
"""

from __future__ import annotations

from piigate.config.reader import http_url
from piigate.tokens.fetch import check_jwks_uri
from piigate.transport.addresses import is_loopback_host
from tests.fuzz.targets import Finding

# Found by this target and fixed: yarl 1.25.1 raises IndexError (not ValueError) for
# `//[::1]:x@//` and `https://[::1]:x@/`; check_jwks_uri now refuses them as ValueError.
KNOWN: tuple[type[BaseException], ...] = ()


def fuzz(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    config_accepts = http_url(text) is None
    try:
        url = check_jwks_uri(text)
    except ValueError:
        if config_accepts:
            raise Finding(f"the config accepts {text!r}, the fetcher refuses it") from None
        return
    if not url.is_absolute() or not url.host or url.user is not None or url.password:
        raise Finding(f"accepted {text!r}: not absolute, or with credentials")
    if url.scheme != "https" and not (url.scheme == "http" and is_loopback_host(url.host)):
        raise Finding(f"accepted {text!r}: clear text to a host that is not loopback")
