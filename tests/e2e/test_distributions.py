"""The three distributions as a user installs them: `piigate-client` alone pulls in only its
four dependencies and works at the oldest versions it names; the `piigate` wheel carries
no development stand-in, the `piigate-dev` wheel carries them.

Every test here is `slow`: it builds wheels or fresh virtual environments with the real pip
(PyPI through pip's cache), yet `make test` runs it like any other. pip builds in the source
tree, so each build works on a copy and leaves the work tree as it was.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stack import running_stack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = ROOT / "clients" / "pyproject.toml"
CLIENT_DEPENDENCIES = {"grpcio", "grpcio-status", "protobuf", "googleapis-common-protos"}
# What the gateway and the stand-ins need and a client must never be made to install.
SERVER_SIDE = {
    "piigate", "piigate-dev", "aiohttp", "pyjwt", "cryptography", "cachetools", "uvloop",
    "grpcio-health-checking", "grpcio-reflection",
}
PIP_TIMEOUT_S = 300
CALL_TIMEOUT_S = 60

# Run by the fresh environment's interpreter, isolated (-I) from this checkout: one call,
# one batch and one refusal through piigate_client, printed as JSON.
CALL_SCRIPT = """
import importlib.metadata, importlib.util, json, sys
from piigate_client import DetokenizationClient, PiigateError

request = json.load(sys.stdin)
with DetokenizationClient(request["target"], lambda: request["caller_token"],
                          timeout_s=10) as client:
    one = client.detokenize(request["subject_token"])
    batch = client.detokenize_many([request["subject_token"], "not-a-jwt"], fields=["ssn"])
    try:
        client.detokenize("")
        refusal = None
    except PiigateError as error:
        refusal = [error.code.name, error.reason]
print(json.dumps({
    "server_importable": importlib.util.find_spec("piigate") is not None,
    "versions": {name: importlib.metadata.version(name) for name in request["versions"]},
    "token_id": one.token_id,
    "fields": [[f.name, f.value, f.disclosure] for f in one.fields],
    "batch": [[f.name, f.value] for f in batch[0].fields] + [batch[1].reason],
    "refusal": refusal,
}))
"""

LIST_SCRIPT = """
import importlib.metadata, json
listed = importlib.metadata.distributions()
print(json.dumps({d.metadata["Name"]: d.requires or [] for d in listed}))
"""


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run(*command: str | Path) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=PIP_TIMEOUT_S, check=False)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class FreshEnvironment:
    """A virtual environment of its own, with nothing of this checkout in it."""

    python: Path

    @classmethod
    def create(cls, path: Path) -> FreshEnvironment:
        run(sys.executable, "-m", "venv", path)
        return cls(path / "bin" / "python")

    def pip_install(self, *requirements: str | Path) -> None:
        run(self.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            *requirements)

    def distributions(self) -> dict[str, list[str]]:
        """Installed distribution → its Requires-Dist lines, by normalized name."""
        listed = json.loads(run(self.python, "-I", "-c", LIST_SCRIPT))
        return {normalized(name): requires for name, requires in listed.items()}


def requirement_name(line: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    assert match, line
    return normalized(match.group(1))


def runtime_requirements(requires: list[str]) -> set[str]:
    """The names a distribution requires when installed without extras."""
    return {requirement_name(line) for line in requires if "extra ==" not in line}


def reachable(start: str, installed: dict[str, list[str]]) -> set[str]:
    """`start` and every installed distribution its runtime requirements lead to (one that
    a marker left out leads nowhere)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in installed:
            continue
        seen.add(name)
        todo += runtime_requirements(installed[name])
    return seen


def lowest_supported() -> dict[str, str]:
    """The floor (`>=`) of each of the client's dependencies, as clients/pyproject.toml
    declares them."""
    floors = {}
    for line in tomllib.loads(CLIENT_PROJECT.read_text())["project"]["dependencies"]:
        floor = re.search(r">=\s*([0-9][^,;\s]*)", line)
        assert floor, f"{line!r}: every client dependency needs a lower bound"
        floors[requirement_name(line)] = floor.group(1)
    assert set(floors) == CLIENT_DEPENDENCIES
    return floors


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three projects, copied without build output or caches."""
    copy = tmp_path_factory.mktemp("sources")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "node_modules")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, copy / name)
    for tree in ("server", "clients", "dev"):
        shutil.copytree(ROOT / tree, copy / tree, ignore=ignore)
    return copy


@pytest.fixture(scope="module")
def lowest_client(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> FreshEnvironment:
    """The client alone, with every dependency at the oldest version it admits."""
    environment = FreshEnvironment.create(tmp_path_factory.mktemp("lowest") / "venv")
    pins = [f"{name}=={version}" for name, version in sorted(lowest_supported().items())]
    environment.pip_install(sources / "clients", *pins)
    return environment


def test_the_client_alone_installs_only_its_four_dependencies(
    sources: Path, tmp_path: Path
) -> None:
    environment = FreshEnvironment.create(tmp_path / "venv")
    before = environment.distributions()
    environment.pip_install(sources / "clients")
    after = environment.distributions()

    installed = set(after) - set(before)
    assert runtime_requirements(after["piigate-client"]) == CLIENT_DEPENDENCIES
    assert installed == reachable("piigate-client", after)
    assert installed >= CLIENT_DEPENDENCIES
    assert not installed & SERVER_SIDE
    run(environment.python, "-I", "-W", "error", "-c", "import piigate_client")  # newest ones


async def test_the_client_at_its_oldest_versions_calls_a_real_gateway(
    lowest_client: FreshEnvironment, tmp_path: Path
) -> None:
    floors = lowest_supported()
    async with running_stack() as stack:
        request = {
            "target": stack.target,
            "caller_token": await stack.caller_token("support-tool"),
            "subject_token": stack.user_token("alice"),
            "versions": sorted(floors),
        }
        # Warnings are errors there: stubs a runtime merely tolerates would fail here.
        process = await asyncio.create_subprocess_exec(
            str(lowest_client.python), "-I", "-W", "error", "-c", CALL_SCRIPT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        )
        try:
            out, err = await asyncio.wait_for(
                process.communicate(json.dumps(request).encode()), CALL_TIMEOUT_S
            )
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        alice = stack.users["alice"].token_id

    assert process.returncode == 0, err.decode()
    answer = json.loads(out)
    assert answer["server_importable"] is False
    assert answer["versions"] == floors
    assert answer["token_id"] == alice
    assert answer["fields"] == [
        ["ssn", "***-**-1234", "masked"],
        ["email", "a***@example.com", "masked"],
        ["user_id", "", "redacted"],
    ]
    assert answer["batch"] == [["ssn", "***-**-1234"], "TOKEN_MALFORMED"]
    assert answer["refusal"] == ["INVALID_ARGUMENT", "SUBJECT_TOKEN_MISSING"]


@dataclass(frozen=True)
class Wheel:
    """What a built wheel installs: its files outside .dist-info, and its metadata."""

    files: list[str]
    metadata: str
    entry_points: str

    @property
    def top_level(self) -> set[str]:
        return {name.split("/")[0] for name in self.files}


def build_wheel(project: Path, into: Path) -> Wheel:
    into.mkdir()
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
        "--no-deps", project, "-w", into)
    (path,) = into.glob("*.whl")
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()

        def dist_info(file: str) -> str:
            (name,) = [n for n in names if n.endswith(f".dist-info/{file}")]
            return wheel.read(name).decode()

        return Wheel([n for n in names if ".dist-info/" not in n],
                     dist_info("METADATA"), dist_info("entry_points.txt"))


def test_the_gateway_wheel_has_no_stand_ins_and_the_dev_wheel_has_them(
    sources: Path, tmp_path: Path
) -> None:
    gateway = build_wheel(sources, tmp_path / "gateway")
    assert "piigate/bootstrap.py" in gateway.files
    assert gateway.top_level == {"piigate"}  # no piigate_dev, and the client is its own
    assert not [n for n in gateway.files if "localvault" in n or "devissuer" in n]
    assert "Requires-Dist: piigate-client==0.1.0" in gateway.metadata
    assert "piigate-dev" not in gateway.entry_points

    stand_ins = build_wheel(sources / "dev", tmp_path / "dev")
    assert stand_ins.top_level == {"piigate_dev"}
    assert "piigate_dev/localvault/vault.py" in stand_ins.files
    assert "piigate_dev/devissuer/service.py" in stand_ins.files
    assert "Requires-Dist: piigate==0.1.0" in stand_ins.metadata
    assert "piigate-dev = piigate_dev.cli:main" in stand_ins.entry_points
