"""deploy/: every Kubernetes manifest, and every overlay as rendered, validates against the
Kubernetes schemas (kubernetes-validate, bundled schemas, strict); the probes and grace
period say what deploy/README.md says; the ConfigMap's TOML passes piigate's own config
check; the Containerfile passes hadolint; the image's health check answers as documented.

`render` is kustomize's build for the subset these files use (resources, namespace,
labels, images, strategic-merge patches by path), written out so the test runs offline;
a kustomization using anything else fails here rather than being rendered wrongly.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from piigate.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33"
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches",
                      "labels"}
MERGE_KEYS = {"containers": "name", "volumes": "name", "volumeMounts": "name", "env": "name",
              "topologySpreadConstraints": "topologyKey"}
BUILDS = ["base", "overlays/staging", "overlays/production"]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(target: Any, patch: Any, key: str | None = None) -> Any:
    if isinstance(target, dict) and isinstance(patch, dict):
        for k, v in patch.items():
            target[k] = merge(target.get(k), v, k) if k in target else copy.deepcopy(v)
        return target
    if isinstance(target, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        for item in patch:
            found = [t for t in target if t.get(by) == item.get(by)]
            if found:
                merge(found[0], item)
            else:
                target.append(copy.deepcopy(item))
        return target
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict[str, Any]]:
    (k,) = documents(directory / "kustomization.yaml")
    assert set(k) <= KUSTOMIZATION_KEYS, f"{directory}: {set(k) - KUSTOMIZATION_KEYS}"
    docs: list[dict[str, Any]] = []
    for resource in k.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else documents(path)
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}
        (p,) = documents(directory / patch["path"])
        targets = [d for d in docs if (d["kind"], d["metadata"]["name"]) ==
                   (p["kind"], p["metadata"]["name"])]
        assert len(targets) == 1, f"{patch['path']} matches {len(targets)} resources"
        merge(targets[0], p)
    for label in k.get("labels", []):
        assert set(label) <= {"pairs", "includeSelectors"}
        assert not label.get("includeSelectors", False)
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(label["pairs"])
    for d in docs:
        if "namespace" in k:
            d["metadata"]["namespace"] = k["namespace"]
        for container in containers(d):
            for image in k.get("images", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", []))


def one(docs: list[dict[str, Any]], kind: str, name: str = "piigate") -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def manifest_files() -> list[Path]:
    patches = {(p.parent / e["path"]).resolve() for p in K8S.rglob("kustomization.yaml")
               for e in documents(p)[0].get("patches", [])}
    return sorted(p for p in K8S.rglob("*.yaml")
                  if p.name != "kustomization.yaml" and p.resolve() not in patches)


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates(path: Path) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("build", BUILDS)
def test_every_build_renders_and_validates(build: str) -> None:
    docs = render(K8S / build)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert len(names) == len(docs), "two resources share a kind and name"
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                 "NetworkPolicy", "ConfigMap", "Secret", "ServiceAccount"):
        assert (kind, "piigate" if kind not in ("ConfigMap", "Secret") else
                {"ConfigMap": "piigate-config", "Secret": "piigate-secrets"}[kind]) in names
    if build != "base":
        assert all("namespace" in d["metadata"] for d in docs)
    assert (("StatefulSet", "piigate-redis") in names) == (build == "overlays/staging")


@pytest.mark.parametrize("build", BUILDS)
def test_the_pods_are_locked_down_and_probed_as_documented(build: str) -> None:
    docs = render(K8S / build)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    (gateway,) = pod["containers"]
    assert gateway["image"].startswith("registry.example.com/piigate:")
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert gateway["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "memory" in gateway["resources"]["limits"]
    # Ready: the overall gRPC health service. Alive: the port, never the health status
    # (NOT_SERVING while an identity provider is down).
    assert gateway["readinessProbe"]["grpc"] == {"port": 50051}
    assert set(gateway["livenessProbe"]) & {"tcpSocket", "grpc", "httpGet", "exec"} == {
        "tcpSocket"}
    config = tomllib.loads(one(docs, "ConfigMap", "piigate-config")["data"]["piigate.toml"])
    pre_stop = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + config["server"]["shutdown_grace_s"]
    assert config["state"]["backend"] == "redis"
    for stateful in (d for d in docs if d["kind"] == "StatefulSet"):
        for c in containers(stateful):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("build", BUILDS)
def test_the_configmap_passes_piigates_own_check(build: str, tmp_path: Path) -> None:
    docs = render(K8S / build)
    config_dir, secrets_dir = tmp_path / "config", tmp_path / "secrets"
    config_dir.mkdir()
    secrets_dir.mkdir()
    for name, text in one(docs, "ConfigMap", "piigate-config")["data"].items():
        (config_dir / name).write_text(text)
    for name in one(docs, "Secret", "piigate-secrets")["stringData"]:
        (secrets_dir / name).write_text("x" * 64)  # what an operator fills in
        (secrets_dir / name).chmod(0o400)  # the volume's defaultMode
    config = load_config(config_dir / "piigate.toml", environ={})
    assert config.state.redis is not None
    assert config.state.subject_key == b"x" * 64


def test_an_unfilled_secret_refuses_to_start(tmp_path: Path) -> None:
    from piigate.config import ConfigError

    docs = render(K8S / "base")
    (tmp_path / "config").mkdir()
    (tmp_path / "secrets").mkdir()
    toml = one(docs, "ConfigMap", "piigate-config")["data"]["piigate.toml"]
    (tmp_path / "config" / "piigate.toml").write_text(toml)
    for name, value in one(docs, "Secret", "piigate-secrets")["stringData"].items():
        (tmp_path / "secrets" / name).write_text(value)
        (tmp_path / "secrets" / name).chmod(0o400)  # the volume's defaultMode
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "config" / "piigate.toml", environ={})
    assert any("is empty" in p for p in caught.value.problems)


def test_the_containerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(DEPLOY / "Containerfile")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Containerfile").read_text()
    assert "USER 10001" in text
    assert "./clients '.[otlp]'" in text  # the gateway and its optional OTLP exporter
    assert "COPY dev" not in text  # never the development stand-ins
