"""The TypeScript client (clients/typescript) against a real piigate.

The node tests (clients/typescript/test/client.test.ts, run with `node --test`) make the
calls; this module gives them a running stack: it installs and builds the package when
needed (`npm ci`, `tsc`), starts the real local vault, dev issuer and gateway, mints the
caller tokens and the users' subject tokens, and hands them over in PIIGATE_E2E. The
node test runner's exit status is the verdict; its output is shown only on failure, and
carries no token (the node tests never print one).

Also here: the committed TypeScript stubs match what `buf generate` makes of protos/.
"""

from __future__ import annotations

import asyncio
import filecmp
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from piigate_dev import demo
from tests.support.stack import running_stack

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
BUF = PACKAGE / "node_modules" / ".bin" / "buf"
NPM_CI_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 120
NODE_TESTS_TIMEOUT_S = 120
# client.test.js against the real gateway; retry.test.js against its own scripted server;
# chunking.test.js needs no server
NODE_TESTS = [str(PACKAGE / "dist" / "test" / name) for name in ("client.test.js",
                                                                 "retry.test.js",
                                                                 "chunking.test.js")]


def _run(args: list[str], timeout_s: float) -> None:
    done = subprocess.run(
        args, cwd=PACKAGE, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def built_package() -> Path:
    """clients/typescript installed from its lockfile (once) and built (every run)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not on PATH")
    if not (PACKAGE / "node_modules").is_dir():
        _run(["npm", "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S)
    _run(["npm", "run", "--silent", "build"], BUILD_TIMEOUT_S)
    return PACKAGE


def test_typescript_stubs_match_the_protos(built_package: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BUF), "generate", "--template", "buf.gen.yaml", "--output", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr
    committed = built_package / "src" / "gen"
    fresh = tmp_path / "clients" / "typescript" / "src" / "gen"
    assert _tree(fresh) == _tree(committed), "run `npm run generate` in clients/typescript"
    mismatched = [
        p for p in _tree(fresh) if not filecmp.cmp(fresh / p, committed / p, shallow=False)
    ]
    assert not mismatched, f"stale stubs {mismatched}: run `npm run generate`"


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_typescript_client_against_a_real_gateway(built_package: Path) -> None:
    async with running_stack() as stack:
        setup = {
            "target": stack.target,
            "tokenUrl": stack.issuer.base_url + "/oauth/token",
            "audience": "piigate",
            "client": {"id": "support-tool", "secret": stack.secrets.clients["support-tool"]},
            "callers": {
                "fhir": await stack.caller_token("fhir-app"),
                "support": await stack.caller_token("support-tool"),
                "billing": await stack.caller_token("billing-app"),
            },
            "users": {
                "aliceSupport": stack.user_token("alice"),
                "bobSupport": stack.user_token("bob"),
                # migrated for the FHIR API, with its launch and Patient.read scopes
                "carolFhir": stack.users["carol"].access_token,
            },
            "expect": {
                "aliceSsnMasked": "***-**-1234",
                "bobSsnMasked": "***-**-4321",
                "carolUserId": dict(demo.PEOPLE)["carol"]["user_id"],
            },
        }
        # The gateway, vault and issuer serve on this event loop: wait without blocking it.
        node = await asyncio.create_subprocess_exec(
            "node", "--test", *NODE_TESTS, cwd=built_package,
            env={**os.environ, "PIIGATE_E2E": json.dumps(setup)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(node.communicate(), NODE_TESTS_TIMEOUT_S)
        except TimeoutError:
            node.kill()
            await node.wait()
            pytest.fail(f"node --test did not finish within {NODE_TESTS_TIMEOUT_S} s")
    report = output.decode(errors="replace")
    assert node.returncode == 0, report
    assert "# fail 0" in report, report
    assert "# pass 0" not in report, report
