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
    assert issuer.pii_token_claim == ("https://example.com/pii_token",)
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
    (tmp_path / "fhir.key").chmod(0o600)  # key files must be private
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


# --- hostile input: every one a reported problem, never an exception ------------------


class CountingName(str):
    """An issuer name that counts how often it is compared for equality."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        CountingName.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_duplicate_issuer_names_are_found_in_linear_comparisons() -> None:
    # Thousands of [[issuers]] with one name once took a comparison per pair.
    n = 1000
    data = minimal()
    data["issuers"] = [dict(data["issuers"][0], name=CountingName("dev")) for _ in range(n)]
    CountingName.comparisons = 0
    assert "issuers: issuer name 'dev' is configured twice" in problems(data)
    assert CountingName.comparisons < 20 * n


def test_missing_and_duplicated_issuer_names_are_both_reported() -> None:
    data = minimal()
    unnamed = {k: v for k, v in data["issuers"][0].items() if k != "name"}
    data["issuers"] = [unnamed, dict(unnamed), data["issuers"][0], dict(data["issuers"][0])]
    found = problems(data)
    assert "issuers[0].name: is required" in found
    assert "issuers: issuer name 'dev' is configured twice" in found


def _config_file(tmp_path: Path, first_line: bytes) -> Path:
    path = tmp_path / "piigate.toml"
    path.write_bytes(first_line + b"\n" + MINIMAL_TOML)
    return path


MINIMAL_TOML = b"""
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
vault_api_key_env = "FHIR_VAULT_KEY"
fields = { user_id = "raw" }
"""


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENV)
    return caught.value.problems


def test_the_minimal_file_loads(tmp_path: Path) -> None:
    assert load_config(_config_file(tmp_path, b""), environ=ENV).vault.timeout_s == 2.0


def test_deep_nesting_is_reported(tmp_path: Path) -> None:
    path = _config_file(tmp_path, b"x = " + b"[" * 5000 + b"]" * 5000)
    assert load_problems(path) == [f"{path}: not valid TOML: nested too deeply"]


def test_an_integer_of_thousands_of_digits_is_reported(tmp_path: Path) -> None:
    path = _config_file(tmp_path, b"x = 1" + b"0" * 5000)
    [problem] = load_problems(path)
    assert problem.startswith(f"{path}: not valid TOML: ")


def test_invalid_utf8_is_reported(tmp_path: Path) -> None:
    path = _config_file(tmp_path, b"# caf\xe9")
    assert load_problems(path) == [
        f"{path}: not valid TOML: not UTF-8 (byte 0xe9 at offset 5)"
    ]


def test_a_nul_byte_in_the_config_path_is_reported(tmp_path: Path) -> None:
    [problem] = load_problems(tmp_path / "piigate\0.toml")
    assert "cannot read" in problem


def key_file_problems(name: str, tmp_path: Path) -> list[str]:
    data = minimal()
    del data["profiles"]["fhir"]["vault_api_key_env"]
    data["profiles"]["fhir"]["vault_api_key_file"] = name
    with pytest.raises(ConfigError) as caught:
        parse_config(data, ENV, tmp_path)
    return caught.value.problems


def test_a_nul_byte_in_a_file_name_is_reported(tmp_path: Path) -> None:
    assert key_file_problems("fhir\0.key", tmp_path) == [
        "profiles.fhir.vault_api_key_file: must not contain a NUL byte"
    ]
    found = problems(minimal(audit={"sink": "file", "path": "audit\0.jsonl"}))
    assert found == ["audit.path: must not contain a NUL byte"]


def test_an_over_long_file_name_is_reported(tmp_path: Path) -> None:
    long_name = "k" * 300
    assert key_file_problems(long_name, tmp_path) == [
        "profiles.fhir.vault_api_key_file: has a file name longer than 255 bytes"
    ]
    data = minimal(server={"tls_cert_file": long_name, "tls_key_file": "tls.key"})
    found = problems(data)
    assert "server.tls_cert_file: has a file name longer than 255 bytes" in found


def test_a_secret_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    (tmp_path / "fhir.key").write_bytes(b"\xff\xfe")
    (tmp_path / "fhir.key").chmod(0o600)  # key files must be private
    assert key_file_problems("fhir.key", tmp_path) == [
        "profiles.fhir.vault_api_key_file: fhir.key is not UTF-8 text"
    ]


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("vault", "timeout_ms"),
        ("server", "request_timeout_ms"),
        ("server", "max_concurrent_rpcs"),
        ("server", "shutdown_grace_s"),
    ],
)
def test_a_huge_number_is_reported(section: str, key: str) -> None:
    data = minimal()
    data.setdefault(section, {})[key] = 10**400
    found = problems(data)
    assert any(p.startswith(f"{section}.{key}: ") for p in found), found


@pytest.mark.parametrize("key", ["timeout_ms", "jwks_timeout_ms", "request_timeout_ms"])
def test_a_timeout_beyond_an_hour_is_reported(key: str) -> None:
    data = minimal()
    section = {"timeout_ms": "vault", "request_timeout_ms": "server"}.get(key)
    table = data.setdefault(section, {}) if section else data["issuers"][0]
    table[key] = 10**15
    path = f"{section}.{key}" if section else f"issuers[0].{key}"
    assert f"{path}: must be at most 3600000 (an hour)" in problems(data)


def test_an_empty_file_name_is_reported(tmp_path: Path) -> None:
    assert key_file_problems("", tmp_path) == [
        "profiles.fhir.vault_api_key_file: must not be empty"
    ]
    assert problems(minimal(audit={"sink": "file", "path": ""})) == [
        "audit.path: must not be empty"
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://[::1]:x@/", "must be an http(s) URL"),  # yarl raised IndexError at start-up
        ("https://user:secret@idp.example/jwks", "must not carry credentials"),
        ("https:///jwks", "must be an http(s) URL"),
    ],
)
def test_urls_are_checked_as_the_fetchers_will_read_them(url: str, message: str) -> None:
    data = minimal(vault={"url": url})
    data["issuers"][0]["jwks_uri"] = url
    found = problems(data)
    assert f"vault.url: {message}" in found
    assert f"issuers[0].jwks_uri: {message}" in found


def test_discovery_needs_an_issuer_url_it_may_fetch() -> None:
    data = minimal()
    data["issuers"][0] = {"name": "dev", "issuer": "http://idp.example/", "discovery": True}
    assert "issuers[0].issuer: must use https unless the host is loopback (discovery " \
        "fetches ISSUER/.well-known/openid-configuration)" in problems(data)


@pytest.mark.parametrize(("listen", "metrics", "clash"), [
    ("127.0.0.1:50051", "127.0.0.1:50051", True),
    ("0.0.0.0:50051", "127.0.0.1:50051", True),
    ("127.0.0.1:50051", "[::]:50051", True),
    ("127.0.0.1:50051", "127.0.0.1:9464", False),
    ("127.0.0.1:0", "127.0.0.1:0", False),
    ("127.0.0.1:50051", "127.0.0.2:50051", False),
])
def test_the_metrics_listener_may_not_take_the_grpc_port(
    listen: str, metrics: str, clash: bool
) -> None:
    data = minimal(server={"listen": listen, "metrics_listen": metrics})
    if not clash:
        parse_config(data, ENV, Path("."))
        return
    assert any(p.startswith("server.metrics_listen: the same port as server.listen")
               for p in problems(data))
