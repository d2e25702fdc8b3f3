"""Config loading: defaults, the full format, secrets by digest/env/file, key-path messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from piigate_dev.devissuer.config import (
    DEV_CLIENT_ID,
    ConfigError,
    IssuerConfig,
    load_issuer_config,
)

ORDERS_SECRET = "orders-secret-value"
FULL = f"""
issuer = "http://127.0.0.1:9000/"
algorithm = "ES256"
jwks_max_age_s = 60
pii_claim = "https://piigate.example/pii_token"
client_token_lifetime_s = 600
user_token_lifetime_s = 300
max_token_lifetime_s = 7200

[[clients]]
client_id = "orders"
secret_sha256 = "{hashlib.sha256(ORDERS_SECRET.encode()).hexdigest()}"
audiences = ["piigate"]
scopes = ["pii:read", "pii:read:raw"]

[[clients]]
client_id = "billing"
secret_env = "BILLING_SECRET"
audiences = ["*"]

[[clients]]
client_id = "support"
secret_file = "support.secret"
audiences = ["piigate", "https://api.example"]
scopes = ["*"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "issuer.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_issuer_config(write(tmp_path, text), environ or {})
    return dict(caught.value.problems)


def test_defaults_have_the_dev_client() -> None:
    config = IssuerConfig()
    assert (config.algorithm, config.jwks_max_age_s, config.issuer) == ("RS256", 300, None)
    assert config.pii_claim == "https://example.com/pii_token"
    client = config.client(DEV_CLIENT_ID)
    assert client is not None
    assert client.secret_sha256 == hashlib.sha256(b"dev-secret").digest()
    assert client.audiences is None
    assert client.scopes is None


def test_full_config(tmp_path: Path) -> None:
    (tmp_path / "support.secret").write_text("support-secret\n")
    config = load_issuer_config(write(tmp_path, FULL), {"BILLING_SECRET": "billing-secret"})
    assert config.issuer == "http://127.0.0.1:9000/"
    assert config.algorithm == "ES256"
    assert (config.jwks_max_age_s, config.client_token_lifetime_s) == (60, 600)
    assert (config.user_token_lifetime_s, config.max_token_lifetime_s) == (300, 7200)
    assert config.pii_claim == "https://piigate.example/pii_token"
    assert [c.client_id for c in config.clients] == ["orders", "billing", "support"]
    orders, billing, support = config.clients
    assert orders.secret_sha256 == hashlib.sha256(ORDERS_SECRET.encode()).digest()
    assert orders.audiences == frozenset({"piigate"})
    assert orders.scopes == frozenset({"pii:read", "pii:read:raw"})
    assert billing.secret_sha256 == hashlib.sha256(b"billing-secret").digest()
    assert billing.audiences is None
    assert billing.scopes == frozenset()  # no scopes key: no scopes
    assert support.secret_sha256 == hashlib.sha256(b"support-secret").digest()  # newline stripped
    assert support.scopes is None
    assert config.client("dev-client") is None  # named clients replace the dev default


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    (tmp_path / "support.secret").write_text("support-secret\n")
    config = load_issuer_config(write(tmp_path, FULL), {"BILLING_SECRET": "billing-secret"})
    text = repr(config)
    assert "billing-secret" not in text
    assert "support-secret" not in text
    assert hashlib.sha256(ORDERS_SECRET.encode()).hexdigest() not in text


def test_no_clients_key_keeps_dev_client_and_empty_list_means_none(tmp_path: Path) -> None:
    assert load_issuer_config(write(tmp_path, 'algorithm = "EdDSA"\n'), {}).client("dev-client")
    assert load_issuer_config(write(tmp_path, "clients = []\n"), {}).clients == ()


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    text = """
issuer = "ftp://x"
algorithm = "HS256"
jwks_max_age_s = -1
pii_claim = "sub"
colour = "blue"

[[clients]]
client_id = "a"
secret_sha256 = "abc"
audiences = ["piigate"]
scopes = ["bad scope"]

[[clients]]
client_id = "a"
secret_env = "MISSING_VAR"
secret_file = "x"
audiences = "piigate"
extra = 1

[[clients]]
client_id = "c"
secret_env = "MISSING_VAR"
scopes = ["*", "x"]
"""
    found = problems(tmp_path, text)
    assert found == {
        "colour": "unknown key",
        "issuer": "must be an http(s) URL such as 'http://127.0.0.1:9000/'",
        "algorithm": "must be one of RS256, ES256, EdDSA",
        "pii_claim": "'sub' is a registered claim; use a namespaced name",
        "jwks_max_age_s": "must be an integer from 0 to 86400",
        "clients[0].secret_sha256": "must be 64 hex digits (the secret's SHA-256)",
        "clients[0].scopes": "'bad scope' is not a valid scope token (RFC 6749 §3.3)",
        "clients[1].extra": "unknown key",
        "clients[1].client_id": "duplicate client_id 'a'",
        "clients[1]": "needs exactly one of secret_sha256, secret_env, secret_file, jwks",
        "clients[1].audiences": 'must be a list of non-empty strings, or ["*"] for any',
        "clients[2].secret_env": "environment variable MISSING_VAR is unset or empty",
        "clients[2].audiences": 'is required: a list of strings, or ["*"] for any',
        "clients[2].scopes": '"*" must be the only entry',
    }


def test_lifetimes_are_bounded_by_the_maximum(tmp_path: Path) -> None:
    found = problems(tmp_path, "max_token_lifetime_s = 100\nuser_token_lifetime_s = 101\n")
    assert found == {"user_token_lifetime_s": "must be an integer from 1 to 100"}


def test_secret_file_problems(tmp_path: Path) -> None:
    (tmp_path / "empty.secret").write_text("\n")
    text = """
[[clients]]
client_id = "a"
secret_file = "empty.secret"
audiences = ["*"]
[[clients]]
client_id = "b"
secret_file = "absent.secret"
audiences = ["*"]
"""
    found = problems(tmp_path, text)
    assert found["clients[0].secret_file"] == "'empty.secret' is empty"
    assert found["clients[1].secret_file"].startswith("cannot read 'absent.secret'")


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(file\): cannot read"):
        load_issuer_config(tmp_path / "absent.toml", {})
    with pytest.raises(ConfigError, match=r"\(file\): not valid TOML"):
        load_issuer_config(write(tmp_path, "issuer = \n"), {})
