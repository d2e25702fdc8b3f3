"""Two checks that keep a config from failing every call later: where the vault token
claim is (`pii_token_claim`), and whether a full batch fits in one gRPC message."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest

from piigate.cli.main import main
from piigate.config import ConfigError, parse_config
from piigate.config.message_size import batch_request_bytes, check_batch_fits
from piigate.config.reader import Reader

ENV = {"VAULT_KEY": "k-123"}
BASE: dict[str, Any] = {
    "vault": {"url": "http://127.0.0.1:8123"},
    "issuers": [{"name": "dev", "issuer": "http://127.0.0.1:9000/",
                 "jwks_uri": "http://127.0.0.1:9000/.well-known/jwks.json"}],
    "profiles": {"support": {"callers": ["support-tool"], "audiences": ["https://s.example"],
                             "collection": "users", "vault_api_key_env": "VAULT_KEY",
                             "fields": {"ssn": "mask"}}},
}


def parse(issuer: dict[str, Any] | None = None, server: dict[str, Any] | None = None) -> Any:
    data = copy.deepcopy(BASE)
    data["issuers"][0].update(issuer or {})
    data["server"] = server or {}
    return parse_config(data, ENV, Path("."))


def problems(issuer: dict[str, Any] | None = None,
             server: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(issuer, server)
    return caught.value.problems


@pytest.mark.parametrize(
    ("claim", "path"),
    [
        ("https://example.com/pii_token", ("https://example.com/pii_token",)),
        ("urn:acme.example:pii_token", ("urn:acme.example:pii_token",)),
        ("pii_token", ("pii_token",)),
        (["app_metadata", "pii_token"], ("app_metadata", "pii_token")),
        (["app_metadata.pii_token"], ("app_metadata.pii_token",)),  # a flat name with a dot
    ],
)
def test_a_claim_name_or_a_path_of_names(claim: Any, path: tuple[str, ...]) -> None:
    assert parse({"pii_token_claim": claim}).issuers[0].pii_token_claim == path


def test_the_default_claim_is_the_namespaced_one() -> None:
    assert parse().issuers[0].pii_token_claim == ("https://example.com/pii_token",)


def test_a_dotted_name_that_is_not_a_uri_is_refused_with_both_spellings() -> None:
    assert problems({"pii_token_claim": "app_metadata.pii_token"}) == [
        "issuers[0].pii_token_claim: 'app_metadata.pii_token' looks like a path but is one "
        'claim name: for the nested claim write ["app_metadata", "pii_token"]; for a claim '
        'whose name holds a dot write ["app_metadata.pii_token"]; a namespaced claim is a '
        "URL such as 'https://example.com/pii_token'"
    ]


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ("", "must not be empty"),
        ([], "must name at least one claim"),
        (["a", ""], "must be a list of non-empty strings"),
        (["a"] * 9, "must be a path of at most 8 claim names"),
        (42, "must be a claim name (a string) or a path of claim names (a list)"),
    ],
)
def test_unusable_claims_are_refused(claim: Any, message: str) -> None:
    assert problems({"pii_token_claim": claim}) == [f"issuers[0].pii_token_claim: {message}"]


def test_the_default_batch_fits_the_default_message_limit() -> None:
    server = parse().server
    assert server.max_batch_size == 100
    assert server.max_request_bytes == 1024 * 1024
    assert batch_request_bytes(server.max_batch_size) <= server.max_request_bytes


def test_a_batch_the_message_limit_cannot_hold_is_refused_naming_both_keys() -> None:
    assert problems(server={"max_request_bytes": 65536}) == [
        "server.max_request_bytes: 65536 bytes cannot hold a full batch: "
        "server.max_batch_size = 100 subject tokens of up to 8192 bytes need 835884 bytes "
        "(with 16384 for the rest of the request); raise server.max_request_bytes to at "
        "least 835884 or lower server.max_batch_size to at most 5"
    ]
    assert "server.max_batch_size = 126" in problems(server={"max_batch_size": 126})[0]


def test_a_limit_that_holds_not_even_one_token() -> None:
    (problem,) = problems(server={"max_request_bytes": 4096, "max_batch_size": 1})
    assert problem.endswith("raise server.max_request_bytes to at least 24579 "
                            "(it cannot hold even one subject token)")


def test_combinations_that_fit_are_accepted() -> None:
    assert parse(server={"max_request_bytes": 65536, "max_batch_size": 5}).server
    assert parse(server={"max_request_bytes": 835884}).server
    assert parse(server={"max_request_bytes": 4 << 20, "max_batch_size": 500}).server


def test_values_already_refused_are_not_reported_twice() -> None:
    assert problems(server={"max_request_bytes": -1}) == [
        "server.max_request_bytes: must be greater than 0"]
    r = Reader({}, Path("."))
    check_batch_fits(r, 0, 10)
    assert r.problems == []


def test_check_config_refuses_an_impossible_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "piigate.toml"
    path.write_text(textwrap.dedent("""\
        [server]
        max_request_bytes = 65536
        max_batch_size = 100
        [vault]
        url = "http://127.0.0.1:8123"
        [[issuers]]
        name = "dev"
        issuer = "http://127.0.0.1:9000/"
        jwks_uri = "http://127.0.0.1:9000/.well-known/jwks.json"
        [profiles.support]
        callers = ["support-tool"]
        audiences = ["https://s.example"]
        collection = "users"
        vault_api_key_env = "VAULT_KEY"
        fields = { ssn = "mask" }
        """))
    monkeypatch.setenv("VAULT_KEY", "k-123")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "1 problem(s)" in err
    assert "server.max_request_bytes: 65536 bytes cannot hold a full batch" in err
    assert "server.max_batch_size = 100" in err
    path.write_text(path.read_text().replace("max_batch_size = 100", "max_batch_size = 5"))
    assert main(["check-config", str(path)]) == 0
