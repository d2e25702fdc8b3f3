"""config.load_config on hostile TOML files (parse_toml, then parse_config).

Input: the file's bytes, written to `piigate.toml` in the work directory, beside a secret
file `fhir.key`. Documented error: `ConfigError`. Oracle: a config that loads keeps the
promises the loader checks (unique issuer names, timeouts of at most an hour).
"""

from __future__ import annotations

from pathlib import Path

from piigate.config import ConfigError, load_config
from tests.fuzz.targets import Finding, expand

ENVIRON = {"FHIR_VAULT_KEY": "k-fhir", "PIIGATE_VAULT_KEY_FHIR": "k-smart"}
_file: Path | None = None


def setup(workdir: Path) -> None:
    global _file
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "fhir.key").write_text("k-from-file\n")
    _file = workdir / "piigate.toml"


def fuzz(data: bytes) -> None:
    assert _file is not None, "setup() first"
    _file.write_bytes(expand(data))
    try:
        config = load_config(_file, ENVIRON)
    except ConfigError:
        return
    names = [issuer.name for issuer in config.issuers]
    if len(set(names)) != len(names):
        raise Finding("two issuers share a name")
    timeouts = [config.server.request_timeout_s, config.vault.timeout_s,
                *(issuer.jwks.timeout_s for issuer in config.issuers)]
    if not all(0 < timeout <= 3600 for timeout in timeouts):
        raise Finding("a timeout beyond an hour was accepted")
