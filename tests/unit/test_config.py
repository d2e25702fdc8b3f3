"""Config: validated completely at start-up, every problem with its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, load_config, parse_config

ENV = {"FHIR_VAULT_KEY": "k-fhir-123"}


def minimal(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "vault": {"url": "http://127.0.0.1:8123"},
        "issuers": [{
            "name": "dev",
            "issuer": "http://127.0.0.1:9000/",
            "jwks_uri": "http://127.0.0.1:9000/.well-known/jwks.json",
        }],
        "profiles": {
            "fhir": {
                "callers": ["fhir-app"],
                "audiences": ["https://fhir.example.com"],
                "collection": "users",
                "vault_api_key_env": "FHIR_VAULT_KEY",
                "fields": {"user_id": "raw", "ssn": "mask"},
            }
        },
    }
    data.update(overrides)
    return data


def problems(data: dict[str, Any], env: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, env, Path("."))
    return caught.value.problems


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config(minimal(), ENV, Path("."))
    assert config.server.listen.port == 50051
    assert config.server.request_timeout_s == 3.0
    assert config.caller.audience == "piigate"
    assert config.caller.issuers == ("dev",)
    issuer = config.issuers[0]
    assert issuer.algorithms == ("RS256",)
    assert issuer.typ == "at+jwt"
    assert issuer.pii_token_claim == "https://example.com/pii_token"
    profile = config.profiles[0]
    assert profile.vault_api_key == "k-fhir-123"
    assert dict(profile.fields) == {"user_id": "raw", "ssn": "mask"}
    assert profile.default_reason == "AppFunctionality"
    assert "k-fhir-123" not in repr(profile)


def test_every_problem_is_reported_with_its_key_path() -> None:
    data = minimal(server={"listen": "nonsense", "request_timeout_ms": -1, "bogus": 1})
    data["issuers"][0]["algorithms"] = ["HS256", "none"]
    data["issuers"][0]["leeway_s"] = 600
    data["profiles"]["fhir"]["fields"] = {"ssn": "plaintext"}
    data["profiles"]["fhir"]["reasons"] = ["Curiosity"]
    found = problems(data, env={})
    assert "server.listen: expected HOST:PORT, got 'nonsense'" in found
    assert "server.request_timeout_ms: must be greater than 0" in found
    assert "server.bogus: unknown key" in found
    assert any(p.startswith("issuers[0].algorithms: 'HS256' is not allowed") for p in found)
    assert any(p.startswith("issuers[0].algorithms: 'none' is not allowed") for p in found)
    assert "issuers[0].leeway_s: must be between 0 and 60 seconds" in found
    assert "profiles.fhir.fields.ssn: must be one of raw, mask, redact" in found
    assert any(p.startswith("profiles.fhir.reasons: 'Curiosity' is not") for p in found)
    assert (
        "profiles.fhir.vault_api_key_env: environment variable FHIR_VAULT_KEY is not set" in found
    )


def test_plain_http_is_refused_for_non_loopback_hosts() -> None:
    data = minimal(vault={"url": "http://vault.internal:8123"})
    assert "vault.url: must use https unless the host is loopback" in problems(data)


def test_a_caller_has_exactly_one_profile() -> None:
    data = minimal()
    data["profiles"]["other"] = dict(data["profiles"]["fhir"])
    assert any("caller 'fhir-app' already uses profile 'fhir'" in p for p in problems(data))


def test_no_profiles_is_an_error_not_an_open_door() -> None:
    assert any(p.startswith("profiles: no profiles") for p in problems(minimal(profiles={})))


def test_secret_must_come_from_exactly_one_place() -> None:
    data = minimal()
    data["profiles"]["fhir"]["vault_api_key_file"] = "key.txt"
    assert any("give exactly one of vault_api_key_env or vault_api_key_file" in p
               for p in problems(data))


def test_secret_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "fhir.key").write_text("from-file\n")
    text = """
[vault]
url = "http://127.0.0.1:8123"
[[issuers]]
name = "dev"
issuer = "http://127.0.0.1:9000/"
jwks_uri = "http://127.0.0.1:9000/.well-known/jwks.json"
[profiles.fhir]
callers = ["fhir-app"]
audiences = ["aud"]
collection = "users"
vault_api_key_file = "fhir.key"
fields = { user_id = "raw" }
"""
    path = tmp_path / "piigate.toml"
    path.write_text(text)
    config = load_config(path, environ={})
    assert config.profiles[0].vault_api_key == "from-file"


def test_invalid_toml_is_reported_not_raised_raw(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[server\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "not valid TOML" in caught.value.problems[0]


def test_default_reason_other_is_refused() -> None:
    data = minimal()
    data["profiles"]["fhir"]["reasons"] = ["Other", "Analytics"]
    data["profiles"]["fhir"]["default_reason"] = "Other"
    assert any("cannot be Other" in p for p in problems(data))


def test_peers_need_mutual_tls_and_valid_selectors() -> None:
    data = minimal()
    data["profiles"]["fhir"]["peers"] = ["spiffe://example.org/ns/a/sa/b", "dns:*.internal"]
    found = problems(data)
    assert any(p.startswith("profiles.fhir.peers[1]: dns: needs an exact host name") for p in found)
    assert any(p.startswith("profiles.fhir.peers: needs server.tls_client_ca_file") for p in found)


def test_a_profile_needs_callers_or_peers() -> None:
    data = minimal()
    del data["profiles"]["fhir"]["callers"]
    assert "profiles.fhir: needs callers (client ids), peers (mTLS identities) or both" in (
        problems(data))
