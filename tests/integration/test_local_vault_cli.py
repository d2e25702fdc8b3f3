"""`python -m piigate-dev local-vault` as a real process: serves, answers, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

STARTUP_TIMEOUT_S = 20
STOP_TIMEOUT_S = 10


async def start(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "piigate_dev", "local-vault", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait (bounded) for the process to exit; its status and stderr."""
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), STOP_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_serves_health_and_stops_on_sigterm() -> None:
    process = await start("--listen", "127.0.0.1:0")
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)).decode()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        assert int(match.group(2)) > 0
        base = match.group(1) + "/api/pvlt/1.0"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(f"{base}/data/info/health") as response:
                assert (response.status, await response.json()) == (200, {"status": "pass"})
            # With no config, the development admin key works.
            headers = {"Authorization": "Bearer pvaultauth"}
            async with http.get(f"{base}/ctl/collections", headers=headers) as response:
                assert (response.status, await response.json()) == (200, [])
        process.send_signal(signal.SIGTERM)
        status, stderr = await finish(process)
        assert status == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_config_errors_exit_2_with_key_paths(tmp_path: Path) -> None:
    config = tmp_path / "vault.toml"
    config.write_text(
        '[[keys]]\nname = "a"\nsecret_env = "SURELY_NOT_SET_ANYWHERE"\npolicies = []\n'
    )
    status, stderr = await finish(await start("--listen", "127.0.0.1:0", "--config", str(config)))
    assert status == 2
    assert (
        "config error at keys[0].secret_env: environment variable SURELY_NOT_SET_ANYWHERE" in stderr
    )
    assert "config error at keys[0].policies" in stderr
    assert "Traceback" not in stderr


async def test_wrong_data_key_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "vault.db"
    process = await start("--listen", "127.0.0.1:0", "--data", str(data))
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT_S)
    process.send_signal(signal.SIGTERM)
    status, stderr = await finish(process)
    assert status == 0
    assert "development only" in stderr
    (tmp_path / "vault.db.key").write_text("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\n")
    status, stderr = await finish(await start("--listen", "127.0.0.1:0", "--data", str(data)))
    assert status == 2
    assert "data key does not match" in stderr
    assert "Traceback" not in stderr


async def test_bad_listen_address_is_a_usage_error() -> None:
    status, stderr = await finish(await start("--listen", "nowhere"))
    assert status == 2
    assert "expected HOST:PORT" in stderr
