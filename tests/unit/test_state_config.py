"""`[state]`: memory by default; redis needs a URL without credentials and a subject key
from the environment or a file; every mistake is reported with its key path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, GatewayConfig, parse_config
from piigate.config.state import StateConfig
from piigate_dev import demo

KEY = "0123456789abcdef0123456789abcdef"
ENV = {"PIIGATE_DEMO_VAULT_KEY_FHIR": "k1", "PIIGATE_DEMO_VAULT_KEY_SUPPORT": "k2",
       "SUBJECT_KEY": KEY, "REDIS_PASSWORD": "pw"}


def config(state: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
           base: Path = Path("."), environ: dict[str, str] = ENV) -> GatewayConfig:
    data = tomllib.loads(demo.gateway_config("https://issuer.example/", "http://127.0.0.1:1",
                                             Path("audit.jsonl")))
    if state is not None:
        data["state"] = state
    if limits is not None:
        data["profiles"]["support"]["limits"] = limits
    return parse_config(data, environ, base)


def problems(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(**kwargs)
    return caught.value.problems


def test_memory_is_the_default_and_needs_no_key() -> None:
    assert config().state == StateConfig()
    assert config({"backend": "memory"}).state.redis is None


def test_redis_with_a_shared_key_and_credentials_from_the_environment() -> None:
    state = config({"backend": "redis", "url": "redis://10.0.0.5:6379/2",
                    "subject_key_env": "SUBJECT_KEY", "password_env": "REDIS_PASSWORD",
                    "command_timeout_ms": 100, "pool_size": 8, "key_prefix": "pg:"}).state
    assert state.backend == "redis"
    assert state.subject_key == KEY.encode()
    assert state.redis is not None
    assert (state.redis.url, state.redis.password, state.redis.username) == (
        "redis://10.0.0.5:6379/2", "pw", None)
    assert (state.redis.command_timeout_s, state.redis.pool_size) == (0.1, 8)
    assert "pw" not in repr(state)
    assert KEY not in repr(state)


def test_secrets_from_files_and_a_ca_for_rediss(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "user").write_text("piigate\n")
    for name in ("key", "user"):
        (tmp_path / name).chmod(0o600)  # secret files must be private
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    state = config({"backend": "redis", "url": "rediss://redis.internal:6380",
                    "subject_key_file": "key", "username_file": "user",
                    "ca_file": "ca.pem"}, base=tmp_path).state
    assert state.redis is not None
    assert state.redis.username == "piigate"
    assert state.redis.ca_file == tmp_path / "ca.pem"


def test_redis_without_a_subject_key_refuses_to_start() -> None:
    assert problems(state={"backend": "redis", "url": "redis://127.0.0.1:6379"}) == [
        "state.subject_key_env: backend redis needs subject_key_env or subject_key_file "
        "(the same key on every replica)"]


@pytest.mark.parametrize(("state", "expected"), [
    ({"backend": "etcd"}, "state.backend: must be memory or redis"),
    ({"backend": "redis", "url": "http://x:1"}, "state.url: must be a redis:// or rediss:// URL"),
    ({"backend": "redis", "url": "redis://u:p@x:1"}, "state.url: must not hold credentials"),
    ({"backend": "redis", "url": "redis://x:1/a"}, "state.url: the path may only be a database"),
    ({"backend": "redis", "url": "redis://x:99999"}, "state.url: must be a redis:// or rediss"),
    ({"backend": "redis", "url": "redis://x:1", "ca_file": "ca.pem"}, "state.ca_file: "),
    ({"backend": "redis", "url": "redis://x:1", "command_timeout_ms": 0},
     "state.command_timeout_ms: must be greater than 0"),
    ({"backend": "redis", "url": "redis://x:1", "pool_size": 0},
     "state.pool_size: must be 1..1024"),
    ({"backend": "redis", "url": "redis://x:1", "password_env": "NOPE"},
     "state.password_env: environment variable NOPE is not set"),
    ({"backend": "memory", "url": "redis://x:1"}, 'state.url: applies only with backend = "redis"'),
    ({"subject_key_env": "SHORT"}, "state.subject_key_env: the key must be at least 32"),
    ({"backend": "redis", "urls": "x"}, "state.urls: unknown key"),
])
def test_mistakes_are_reported_with_their_key_path(state: dict[str, Any], expected: str) -> None:
    state = {"subject_key_env": "SUBJECT_KEY", **state}
    found = problems(state=state, environ={**ENV, "SHORT": "abc"})
    assert any(p.startswith(expected) for p in found), found


def test_on_store_failure_per_profile() -> None:
    profile = {p.name: p for p in config(limits={"caller_per_s": 1,
                                                 "on_store_failure": "fail_open"}).profiles}
    assert profile["support"].limits is not None
    assert profile["support"].limits.on_store_failure == "fail_open"
    default = {p.name: p for p in config(limits={"caller_per_s": 1}).profiles}["support"]
    assert default.limits is not None
    assert default.limits.on_store_failure == "fail_closed"
    assert problems(limits={"on_store_failure": "maybe"}) == [
        "profiles.support.limits.on_store_failure: must be fail_closed or fail_open"]
