"""The annotated config in README.md is a valid config (documentation cannot drift)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from piigate.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    section = README.read_text().split("## Configuration", 1)[1]
    example = section.split("```toml", 1)[1].split("```", 1)[0]
    for name in ("tls/server.crt", "tls/server.key", "tls/ca.crt", "secrets/support-vault.key"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("placeholder\n")
        (tmp_path / name).chmod(0o600)  # key files must be private (piigate.config.secrets)
    config = parse_config(tomllib.loads(example), {"PIIGATE_VAULT_KEY_FHIR": "k"}, tmp_path)
    assert [p.name for p in config.profiles] == ["smart_on_fhir", "support"]
    assert config.server.tls is not None
    assert config.audit.fsync is True
    assert dict(config.profiles[1].fields) == {"ssn": "mask", "email": "mask", "user_id": "redact"}
