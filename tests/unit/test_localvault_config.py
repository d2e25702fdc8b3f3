"""piigate_dev.localvault.config: the documented example loads; every mistake has a path."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

import pytest

from piigate_dev.localvault.config import ConfigError, VaultConfig, load_vault_config
from piigate_dev.localvault.policy import authenticate

EXAMPLE = """
data = "vault.db"
audit = "audit.jsonl"
data_key_env = "TEST_VAULT_DATA_KEY"
[[collections]]
name = "users"
type = "PERSONS"
properties = [
  { name = "user_id", data_type_name = "STRING", is_unique = true },
  { name = "ssn", data_type_name = "SSN" },
  { name = "email", data_type_name = "EMAIL" },
]
[[keys]]
name = "fhir-gateway"
secret_env = "TEST_VAULT_KEY_FHIR"
[[keys.policies]]
operations = ["detokenize"]
collections = ["users"]
properties = ["user_id"]
reasons = ["AppFunctionality"]
[[keys]]
name = "admin"
secret_sha256 = "{admin_sha}"
[[keys.policies]]
operations = ["tokenize", "detokenize", "read", "write"]
collections = ["*"]
properties = ["*"]
reasons = ["*"]
[[keys]]
name = "support"
secret_file = "support.secret"
[[keys.policies]]
operations = ["detokenize"]
collections = ["users"]
properties = ["ssn.mask"]
reasons = ["AccountManagement"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vault.toml"
    path.write_text(text)
    return path


def test_example_config(tmp_path: Path) -> None:
    data_key = os.urandom(32)
    fhir, admin, support = (secrets.token_urlsafe(16) for _ in range(3))
    (tmp_path / "support.secret").write_text(support + "\n")
    text = EXAMPLE.replace("{admin_sha}", hashlib.sha256(admin.encode()).hexdigest())
    environ = {
        "TEST_VAULT_DATA_KEY": base64.b64encode(data_key).decode(),
        "TEST_VAULT_KEY_FHIR": fhir,
    }
    config = load_vault_config(write(tmp_path, text), environ=environ)
    assert config.data_key == data_key
    assert config.data_path == str(tmp_path / "vault.db")  # relative to the config file
    assert config.audit_path == str(tmp_path / "audit.jsonl")
    assert [c.name for c in config.collections] == ["users"]
    assert [k.name for k in config.keys] == ["fhir-gateway", "admin", "support"]
    for secret, name in ((fhir, "fhir-gateway"), (admin, "admin"), (support, "support")):
        key = authenticate(config.keys, secret)
        assert key is not None
        assert key.name == name
    assert data_key.hex() not in repr(config)  # the data key stays out of repr


def test_no_file_is_a_dev_instance() -> None:
    config = load_vault_config(None, environ={})
    assert config == VaultConfig()
    assert authenticate(config.effective_keys(), "pvaultauth") is not None


def test_data_key_from_the_default_environment_variable() -> None:
    key = os.urandom(32)
    config = load_vault_config(
        None, environ={"PIIGATE_VAULT_DATA_KEY": base64.b64encode(key).decode()}
    )
    assert config.data_key == key


def test_every_mistake_is_reported_with_its_path(tmp_path: Path) -> None:
    text = """
colour = "blue"
data_key_env = "MISSING_KEY_ENV"
max_body_bytes = 10
[[collections]]
name = "users"
properties = [{ name = "ssn", data_type_name = "SOCIAL" }]
[[keys]]
name = "a"
secret_env = "MISSING_SECRET_ENV"
[[keys.policies]]
operations = ["destroy"]
collections = ["users"]
properties = ["*"]
reasons = ["Because"]
[[keys]]
name = "b"
secret_sha256 = "abc"
secret_file = "x"
policies = []
"""
    with pytest.raises(ConfigError) as caught:
        load_vault_config(write(tmp_path, text), environ={})
    paths = [path for path, _ in caught.value.problems]
    assert paths == [
        "colour",
        "data_key_env",
        "max_body_bytes",
        "collections[0].properties[0].data_type_name",
        "keys[0].secret_env",
        "keys[0].policies[0].operations",
        "keys[0].policies[0].reasons",
        "keys[1]",
        "keys[1].policies",
    ]
    assert "config error at keys[0].secret_env: environment variable MISSING_SECRET_ENV" in str(
        caught.value
    )


def test_bad_toml_and_bad_data_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_vault_config(write(tmp_path, "keys = [[["), environ={})
    with pytest.raises(ConfigError, match="32 bytes"):
        load_vault_config(None, environ={"PIIGATE_VAULT_DATA_KEY": "c2hvcnQ="})
    with pytest.raises(ConfigError, match="cannot read"):
        load_vault_config(tmp_path / "absent.toml", environ={})


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = 'data_key_file = "key.b64"\n'
    (tmp_path / "key.b64").write_text("not-base64-secretish!")
    with pytest.raises(ConfigError) as caught:
        load_vault_config(write(tmp_path, text), environ={})
    assert "secretish" not in str(caught.value)
