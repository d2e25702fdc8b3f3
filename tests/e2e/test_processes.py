"""The commands as an operator runs them: `piigate serve`, `piigate check-config`, and
`make demo`'s program, each as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from piigate_dev import demo

TIMEOUT_S = 60


def config_text(
    vault_url: str = "http://127.0.0.1:9", issuer: str = "http://127.0.0.1:9/"
) -> str:
    return textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:0"
        [vault]
        url = "{vault_url}"
        [[issuers]]
        name = "dev"
        issuer = "{issuer}"
        jwks_uri = "{issuer}.well-known/jwks.json"
        [profiles.support]
        callers = ["support-tool"]
        audiences = ["{demo.SUPPORT_AUDIENCE}"]
        collection = "users"
        vault_api_key_env = "TEST_VAULT_KEY"
        fields = {{ ssn = "mask" }}
        """)


def piigate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "piigate", *args], capture_output=True, text=True,
        timeout=TIMEOUT_S, env={**os.environ, **(env or {})}, check=False,
    )


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "piigate.toml"
    path.write_text(config_text())
    done = piigate("check-config", str(path), env={"TEST_VAULT_KEY": "k"})
    assert done.returncode == 0, done.stderr
    assert "valid (1 issuer(s), 1 profile(s))" in done.stdout


def test_check_config_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "piigate.toml"
    path.write_text(config_text().replace('ssn = "mask"', 'ssn = "clear"') + "\n[bogus]\n")
    done = piigate("check-config", str(path), env={"TEST_VAULT_KEY": ""})
    assert done.returncode == 2
    assert "bogus: unknown key" in done.stderr
    assert "profiles.support.fields.ssn: must be one of raw, mask, redact" in done.stderr
    assert "environment variable TEST_VAULT_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_prints_its_address_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "piigate.toml"
    path.write_text(config_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "piigate", "serve", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TEST_VAULT_KEY": "k"},
    )
    try:
        line = _first_line(proc)
        assert line.startswith("listening on 127.0.0.1:")
        assert int(line.rsplit(":", 1)[1]) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _first_line(proc: subprocess.Popen[str]) -> str:
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(TIMEOUT_S)
    if not lines:
        pytest.fail("piigate serve printed nothing in time")
    return lines[0].strip()


def test_the_demo_runs_end_to_end_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "piigate_dev.demo"], capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "user_id = u-7f3a91 (raw)" in out
    assert "ssn = ***-**-1234 (masked)" in out
    assert "denied: PERMISSION_DENIED CALLER_WITHOUT_PROFILE" in out
    assert "denied: PERMISSION_DENIED AUDIENCE_NOT_ACCEPTED" in out
    assert "denied: UNAUTHENTICATED TOKEN_EXPIRED" in out
    assert "Traceback" not in done.stderr
