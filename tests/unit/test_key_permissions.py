"""Key files others may read are refused at config load (piigate.config.secrets rules 1-3),
with the file, its mode and the fix; the mode that counts is the symlink target's, as in
a Kubernetes secret volume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from piigate.config import ConfigError, parse_config
from tests.support.pki import issue_cert, make_ca, server_cert
from tests.unit.test_config import ENV, minimal

SECRET = "vault-key-6f1d2c"  # a test value, searched for in messages
ROOT = os.geteuid() == 0
OTHER_UID = 65534  # nobody


def key_file(tmp_path: Path, mode: int, name: str = "fhir.key", text: str = SECRET) -> Path:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def with_key_file(name: str = "fhir.key") -> dict[str, Any]:
    data = minimal()
    del data["profiles"]["fhir"]["vault_api_key_env"]
    data["profiles"]["fhir"]["vault_api_key_file"] = name
    return data


def problems(data: dict[str, Any], base: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, ENV, base)
    return caught.value.problems


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o601, 0o620, 0o610])
def test_a_key_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path, mode)
    if mode & 0o070 and ROOT:
        os.chown(path, OTHER_UID, -1)  # group bits are refused for owners other than root
    [problem] = problems(with_key_file(), tmp_path)
    assert problem == (
        f"profiles.fhir.vault_api_key_file: fhir.key has mode {mode:04o}, open to group or "
        f"others: a key file must be private (run `chmod 600 {path}`)"
    )
    assert SECRET not in problem


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_is_read(tmp_path: Path, mode: int) -> None:
    key_file(tmp_path, mode)
    config = parse_config(with_key_file(), ENV, tmp_path)
    assert config.profiles[0].vault_api_key == SECRET
    assert config.profiles[0].vault_api_key_file == tmp_path / "fhir.key"


def test_group_readable_is_refused_for_an_owner_that_is_not_root(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o640)
    if ROOT:
        os.chown(path, OTHER_UID, -1)
    [problem] = problems(with_key_file(), tmp_path)
    assert "has mode 0640, open to group or others" in problem


@pytest.mark.skipif(not ROOT, reason="needs root to create a root-owned file")
def test_a_root_owned_group_readable_file_is_kubernetes_fsgroup_and_accepted(
    tmp_path: Path,
) -> None:
    # kubelet mounts a secret for a non-root pod with fsGroup as root:fsGroup 0440
    # (defaultMode 0400 plus group read): the pod reads it through its group.
    path = key_file(tmp_path, 0o440)
    os.chown(path, 0, OTHER_UID)
    assert parse_config(with_key_file(), ENV, tmp_path).profiles[0].vault_api_key == SECRET
    path.chmod(0o460)  # but never writable by the group
    assert "has mode 0460" in problems(with_key_file(), tmp_path)[0]


def kubernetes_volume(tmp_path: Path, mode: int) -> Path:
    """The layout kubelet's atomic writer makes: `key -> ..data/key`, `..data -> ..<ts>`."""
    volume = tmp_path / "secrets"
    stamp = volume / "..2026_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    key_file(stamp, mode, "fhir.key")
    (volume / "..data").symlink_to(stamp.name)
    (volume / "fhir.key").symlink_to("..data/fhir.key")
    return volume


def test_a_symlink_is_judged_by_its_target(tmp_path: Path) -> None:
    volume = kubernetes_volume(tmp_path, 0o600)
    assert (volume / "fhir.key").lstat().st_mode & 0o777 == 0o777  # the link itself
    data = with_key_file("secrets/fhir.key")
    assert parse_config(data, ENV, tmp_path).profiles[0].vault_api_key == SECRET
    open_volume = kubernetes_volume(tmp_path / "open", 0o644)
    [problem] = problems(with_key_file("secrets/fhir.key"), open_volume.parent)
    assert "secrets/fhir.key has mode 0644" in problem


def test_a_refused_file_is_never_read(tmp_path: Path) -> None:
    (tmp_path / "fhir.key").write_bytes(b"\xff\xfe not text")
    (tmp_path / "fhir.key").chmod(0o644)
    [problem] = problems(with_key_file(), tmp_path)
    assert "has mode 0644" in problem  # not "is not UTF-8 text": it was not opened for that


def test_the_binding_key_file_is_held_to_the_same_rule(tmp_path: Path) -> None:
    key_file(tmp_path, 0o644, "binding.key")
    data = minimal()
    data["issuers"][0]["binding_key_file"] = "binding.key"
    [problem] = problems(data, tmp_path)
    assert problem.startswith("issuers[0].binding_key_file: binding.key has mode 0644")


def test_the_server_tls_key_is_held_to_it_and_its_certificate_is_not(tmp_path: Path) -> None:
    server = server_cert(make_ca("perm", tmp_path))
    server.cert_file.chmod(0o644)
    data = minimal(server={"tls_cert_file": str(server.cert_file),
                           "tls_key_file": str(server.key_file)})
    parse_config(data, ENV, tmp_path)  # 0600 key (as tests.support.pki writes it)
    server.key_file.chmod(0o644)
    [problem] = problems(data, tmp_path)
    assert problem == (
        f"server.tls_key_file: {server.key_file} has mode 0644, open to group or others: a "
        f"key file must be private (run `chmod 600 {server.key_file}`)"
    )


def test_the_vault_client_key_is_held_to_it(tmp_path: Path) -> None:
    ca = make_ca("perm", tmp_path)
    client = issue_cert(ca, dns_sans=("piigate.internal",))
    data = minimal(vault={"url": "https://vault.internal:8443", "ca_file": str(ca.cert_file),
                          "client_cert_file": str(client.cert_file),
                          "client_key_file": str(client.key_file)})
    assert parse_config(data, ENV, tmp_path).vault.tls is not None
    client.key_file.chmod(0o604)
    [problem] = problems(data, tmp_path)
    assert problem.startswith(f"vault.client_key_file: {client.key_file} has mode 0604")
    assert f"chmod 600 {client.key_file}" in problem


def test_redis_secret_files_are_held_to_it(tmp_path: Path) -> None:
    key_file(tmp_path, 0o644, "subject.key", "0123456789abcdef0123456789abcdef")
    data = minimal(state={"backend": "redis", "url": "redis://127.0.0.1:6379/0",
                          "subject_key_file": "subject.key"})
    found = problems(data, tmp_path)
    assert any(p.startswith("state.subject_key_file: subject.key has mode 0644") for p in found)


@pytest.mark.parametrize("build", ["base", "overlays/staging", "overlays/production"])
def test_every_secret_volume_in_the_manifests_is_mounted_private(build: str) -> None:
    # Kubernetes' default is 0644, which piigate refuses; 0400 becomes root:fsGroup 0440
    # for the non-root pod, which rule 2 accepts.
    from tests.unit.test_state_deploy import K8S, render

    pods = [d["spec"]["template"]["spec"] for d in render(K8S / build)
            if d.get("kind") in ("Deployment", "StatefulSet")]
    secret_volumes = [v["secret"] for pod in pods for v in pod.get("volumes", ())
                      if "secret" in v]
    assert secret_volumes, "no secret volume found: the test would prove nothing"
    for volume in secret_volumes:
        assert volume.get("defaultMode") == 0o400, volume
        assert all(item.get("mode", 0o400) & 0o037 == 0 for item in volume.get("items", ()))
    for pod in pods:
        if any("secret" in v for v in pod.get("volumes", ())):
            context = pod["securityContext"]
            assert context["runAsNonRoot"]
            assert context["fsGroup"] == context["runAsGroup"]
