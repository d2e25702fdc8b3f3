"""`[vault]` TLS keys (checked by building the context), `server.reload_interval_s`, and the
listener-clash check across address families."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, parse_config
from piigate.transport.addresses import listeners_clash, parse_listen
from tests.support.pki import issue_cert, make_ca
from tests.unit.test_config import ENV, minimal

HTTPS_VAULT = "https://vault.internal:8443"


def problems(data: dict[str, Any], base: Path = Path(".")) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, ENV, base)
    return caught.value.problems


def vault(**keys: str) -> dict[str, Any]:
    return minimal(vault={"url": HTTPS_VAULT, **keys})


def test_ca_and_client_certificate_are_read(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    client = issue_cert(ca, dns_sans=("piigate.internal",))
    config = parse_config(vault(ca_file="vault-ca.pem", client_cert_file=client.cert_file.name,
                                client_key_file=client.key_file.name), ENV, tmp_path)
    tls = config.vault.tls
    assert tls is not None
    assert (tls.ca_file, tls.client_cert_file, tls.client_key_file) == (
        ca.cert_file, client.cert_file, client.key_file)
    assert parse_config(minimal(), ENV, tmp_path).vault.tls is None


def test_a_ca_file_alone_is_enough(tmp_path: Path) -> None:
    make_ca("vault", tmp_path)
    tls = parse_config(vault(ca_file="vault-ca.pem"), ENV, tmp_path).vault.tls
    assert tls is not None
    assert tls.client_cert_file is None


def test_a_missing_or_broken_ca_file_is_reported(tmp_path: Path) -> None:
    assert problems(vault(ca_file="absent.pem"), tmp_path) == [
        f"vault.ca_file: cannot read {tmp_path / 'absent.pem'}: No such file or directory"]
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert problems(vault(ca_file="junk.pem"), tmp_path) == [
        f"vault.ca_file: {tmp_path / 'junk.pem'}: holds no PEM certificates"]
    (tmp_path / "empty.pem").write_text("")
    assert problems(vault(ca_file="empty.pem"), tmp_path) == [
        f"vault.ca_file: {tmp_path / 'empty.pem'} is empty"]


def test_client_certificate_and_key_come_together_and_match(tmp_path: Path) -> None:
    ca = make_ca("vault", tmp_path)
    one, other = issue_cert(ca, cn="one"), issue_cert(ca, cn="other")
    assert problems(vault(client_cert_file=str(one.cert_file)), tmp_path) == [
        "vault.client_cert_file: give both client_cert_file and client_key_file (mutual "
        "TLS), or neither"]
    [problem] = problems(vault(client_cert_file=str(one.cert_file),
                               client_key_file=str(other.key_file)), tmp_path)
    assert problem.startswith("vault.client_cert_file: ")
    assert problem.endswith("or they do not belong together")


def test_vault_tls_needs_an_https_vault(tmp_path: Path) -> None:
    make_ca("vault", tmp_path)
    data = minimal(vault={"url": "http://127.0.0.1:8123", "ca_file": "vault-ca.pem"})
    assert problems(data, tmp_path) == ["vault.ca_file: needs an https:// vault.url"]


@pytest.mark.parametrize(("value", "ok"), [(0, True), (0.5, True), (3600, True),
                                           (-1, False), (3601, False)])
def test_reload_interval(value: float, ok: bool) -> None:
    data = minimal(server={"reload_interval_s": value})
    if ok:
        assert parse_config(data, ENV, Path(".")).server.reload_interval_s == value
    else:
        assert problems(data) == ["server.reload_interval_s: must be 0..3600"]


@pytest.mark.parametrize(("a", "b", "clash"), [
    ("0.0.0.0:9000", "[::]:9000", True),        # [::] is dual-stack: it takes IPv4 too
    ("[::]:9000", "127.0.0.1:9000", True),
    ("0.0.0.0:9000", "[::1]:9000", False),      # 0.0.0.0 is IPv4 only
    ("[::1]:9000", "[::]:9000", True),
    ("[::1]:9000", "127.0.0.1:9000", False),
    ("localhost:9000", "127.0.0.1:9000", True),
    ("localhost:9000", "[::1]:9000", True),
    ("localhost:9000", "127.0.0.2:9000", False),
    ("[::ffff:127.0.0.1]:9000", "127.0.0.1:9000", True),
    ("gateway.internal:9000", "0.0.0.0:9000", True),   # a name may resolve to anything
    ("gateway.internal:9000", "GATEWAY.internal:9000", True),
    ("gateway.internal:9000", "10.0.0.5:9000", False),
    ("[::]:9000", "[::]:9001", False),
    ("[::]:0", "0.0.0.0:0", False),
])
def test_listeners_clash_across_families(a: str, b: str, clash: bool) -> None:
    assert listeners_clash(parse_listen(a), parse_listen(b)) is clash
    assert listeners_clash(parse_listen(b), parse_listen(a)) is clash


@pytest.mark.parametrize(("listen", "metrics"), [
    ("0.0.0.0:50051", "[::]:50051"),
    ("localhost:50051", "127.0.0.1:50051"),
    ("[::1]:50051", "[::]:50051"),
])
def test_check_config_refuses_metrics_on_an_overlapping_grpc_socket(
    listen: str, metrics: str
) -> None:
    found = problems(minimal(server={"listen": listen, "metrics_listen": metrics}))
    assert any(p.startswith("server.metrics_listen: the same port as server.listen")
               for p in found)


def test_ipv4_wildcard_and_ipv6_loopback_may_share_a_port_number() -> None:
    data = minimal(server={"listen": "0.0.0.0:50051", "metrics_listen": "[::1]:50051"})
    assert parse_config(data, ENV, Path(".")).server.metrics_listen is not None


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::]:9464", "localhost:9464"])
def test_serve_refuses_a_listen_override_on_the_metrics_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], listen: str
) -> None:
    from piigate.cli.main import main

    (tmp_path / "fhir.key").write_text("k\n")
    (tmp_path / "fhir.key").chmod(0o600)
    config = tmp_path / "piigate.toml"
    config.write_text("""
[server]
listen = "127.0.0.1:50051"
metrics_listen = "127.0.0.1:9464"
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
""")
    # Refused before anything starts: the config alone passes check-config.
    assert main(["check-config", str(config)]) == 0
    assert main(["serve", "--config", str(config), "--listen", listen]) == 2
    assert (f"--listen {listen}: the same port as server.metrics_listen (127.0.0.1:9464): "
            "gRPC and metrics need a port each") in capsys.readouterr().err
