"""A short, deterministic run of every fuzz target, each in its own process.

atheris instruments the parsers' bytecode as they are imported and libFuzzer owns the
process it runs in (it exits when done), so each target runs as
`python -m tests.fuzz.run` in a subprocess: the rest of the suite never sees either.
A fixed seed and a fixed number of inputs per target keep the run the same from one
time to the next; crashes already known and being fixed in the parser's own file are
tolerated here (`--known-ok`) and reported by the longer nightly run (README.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

pytest.importorskip("atheris", reason="atheris is a dev dependency (pip install -e '.[dev]')")

ROOT = Path(__file__).resolve().parents[2]
# Inputs per target: one to three seconds each on a developer machine, ~15 s in all.
RUNS = {
    "jwt": 15_000,
    "jwks": 20_000,
    "jwks_uri": 50_000,
    "token_claims": 100_000,
    "strictjson": 100_000,
    "vault_answer": 100_000,
    "vault_http1": 100_000,
    "smart_scopes": 50_000,
    "config": 3_000,
    "audit_chain": 15_000,
    "peer_names": 30_000,
}
PROCESS_TIMEOUT_S = 60


def test_every_target_has_a_short_run_and_seeds() -> None:
    assert set(RUNS) == set(TARGETS)
    for name in TARGETS:
        assert any((ROOT / "tests/fuzz/corpus" / name).iterdir()), name


@pytest.mark.parametrize("target", TARGETS)
def test_target_survives_a_short_run(target: str, tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tests.fuzz.run", target, "--known-ok",
        "--workdir", str(tmp_path / "work"), f"-runs={RUNS[target]}", "-seed=1",
        f"-artifact_prefix={tmp_path}/", "-print_final_stats=1",
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    findings = sorted(f for f in tmp_path.iterdir() if f.is_file())  # crash-, timeout-, oom-
    reproducers = "\n".join(f"{f.name}: {f.read_bytes()[:300]!r}" for f in findings)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\n{reproducers}"
