"""The two commands: `piigate` runs the gateway's own jobs only, and `piigate-dev` the
development stand-ins; building either parser imports only the chosen subcommand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from piigate.cli.main import SUBCOMMANDS
from piigate_dev.cli import SUBCOMMANDS as DEV_SUBCOMMANDS

TIMEOUT_S = 60


def test_the_gateway_command_has_no_development_stand_ins() -> None:
    assert set(SUBCOMMANDS) == {"serve", "check-config", "explain", "audit"}
    assert all(module.startswith("piigate.") for module, _ in SUBCOMMANDS.values())
    assert set(DEV_SUBCOMMANDS) == {"local-vault", "dev-issuer", "issue-token",
                                    "migrate-user", "demo"}


@pytest.mark.parametrize("argv", [["--help"], ["check-config", "--help"]])
def test_the_gateway_command_never_imports_the_stand_ins(argv: list[str]) -> None:
    probe = (
        "import sys\n"
        "from piigate.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('piigate_dev', 'aiohttp.web')))\n"
        "print('LOADED', loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert "LOADED []" in done.stdout, done.stdout + done.stderr


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "piigate", "local-vault"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 2
    assert "invalid choice: 'local-vault'" in done.stderr


def test_the_dev_command_runs_a_stand_in_subcommand() -> None:
    done = subprocess.run([sys.executable, "-m", "piigate_dev", "local-vault", "--help"],
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert "piigate-dev local-vault" in done.stdout


@pytest.mark.parametrize(("module", "expected"), [("piigate", "piigate 0.1.0"),
                                                  ("piigate_dev", "piigate-dev 0.1.0")])
def test_each_command_says_its_version(module: str, expected: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, expected)
