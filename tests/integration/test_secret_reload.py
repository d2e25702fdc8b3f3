"""Secret and TLS files reloaded without a restart (piigate.config.secrets): through the
real gateway, the real local vault (which, once its key is regenerated, accepts only the
new one) and real TLS handshakes. Rotations are done as operators and Kubernetes do them:
a new file renamed over the old one, or the `..data` symlink swapped."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from piigate.config.secrets import FileWatcher, Reloadable, SecretFileInvalid
from piigate_client import AsyncDetokenizationClient
from piigate_client.errors import PiigateError
from tests.e2e.test_vault_tls import migration_context, vault_server_context
from tests.support.faultproxy import Fault, running_fault_proxy
from tests.support.localvault import regenerate_key
from tests.support.pki import issue_cert, make_ca, server_cert, write_private
from tests.support.stack import Stack, running_stack

NO_RETRIES = ("grpc.service_config", json.dumps({"methodConfig": []}))
SUPPORT_KEY = "profiles.support.vault_api_key_file"
VAULT_KEY_NAME = "piigate-support"  # the support profile's key in the demo vault
DEADLINE_S = 10.0


def rotate(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` whole (a new inode), as `mv new old` or an atomic writer does."""
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(fresh, mode)  # the umask may have narrowed it
    os.replace(fresh, path)


async def eventually(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded) until `check()` holds: for the watcher's next look."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.05)


async def outcome(stack: Stack, token: str | None = None) -> str:
    """OK, or the reason a support read of alice failed (one attempt, no retries)."""
    caller = token or await stack.caller_token("support-tool")
    async with AsyncDetokenizationClient(stack.target, lambda: caller, timeout_s=10,
                                         options=[NO_RETRIES]) as support:
        try:
            await support.detokenize(stack.user_token("alice"))
        except PiigateError as exc:
            return exc.reason
    return "OK"


async def outcome_becomes(stack: Stack, wanted: str) -> None:
    token = await stack.caller_token("support-tool")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while (got := await outcome(stack, token)) != wanted:
        if loop.time() > deadline:
            raise AssertionError(f"still {got}, not {wanted}, after {DEADLINE_S} s")
        await asyncio.sleep(0.05)


def reloads(stack: Stack, source: str, outcome: str) -> float:
    return stack.gateway.metrics.value("piigate_secret_reloads_total", source=source,
                                       outcome=outcome)


# --- vault API key files ------------------------------------------------------------------
async def test_a_rotated_key_file_is_seen_by_the_watcher(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "piigate.config.secrets")
    async with running_stack(vault_key_dir=tmp_path,
                             gateway_overrides={"server": {"reload_interval_s": 0.1}}) as stack:
        assert await outcome(stack) == "OK"
        new = secrets.token_urlsafe(24)
        regenerate_key(stack.vault, VAULT_KEY_NAME, new)
        assert await outcome(stack) == "VAULT_MISCONFIGURED"  # the old key is revoked
        rotate(tmp_path / "support.key", f"{new}\n".encode())
        await outcome_becomes(stack, "OK")
        assert reloads(stack, SUPPORT_KEY, "reloaded") == 1
        assert reloads(stack, "profiles.smart_on_fhir.vault_api_key_file", "reloaded") == 0
        assert f"{SUPPORT_KEY}: reloaded" in caplog.text
        assert new not in caplog.text
        assert stack.secrets.vault_support not in caplog.text


async def test_sighup_reloads_now_without_polling(tmp_path: Path) -> None:
    async with running_stack(vault_key_dir=tmp_path,
                             gateway_overrides={"server": {"reload_interval_s": 0}}) as stack:
        assert await outcome(stack) == "OK"  # (the watcher's start-up look is behind us)
        new = secrets.token_urlsafe(24)
        regenerate_key(stack.vault, VAULT_KEY_NAME, new)
        rotate(tmp_path / "support.key", f"{new}\n".encode())
        await asyncio.sleep(0.3)  # polling is off: nothing may notice on its own
        assert await outcome(stack) == "VAULT_MISCONFIGURED"
        stack.gateway.reload()  # what SIGHUP calls (piigate.cli.serve)
        await outcome_becomes(stack, "OK")
        assert reloads(stack, SUPPORT_KEY, "reloaded") == 1


@pytest.mark.parametrize(("name", "damage", "problem"), [
    ("empty", lambda p: rotate(p, b"\n"), "is empty"),
    ("missing", lambda p: p.unlink(), "No such file or directory"),
    ("world-readable", lambda p: rotate(p, b"a-new-key-9f8e\n", 0o644), "has mode 0644"),
    ("not text", lambda p: rotate(p, b"\xff\xfe\xfd"), "is not UTF-8 text"),
])
async def test_a_failed_reload_keeps_the_current_key_and_is_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str,
    damage: Callable[[Path], None], problem: str,
) -> None:
    caplog.set_level(logging.WARNING, "piigate.config.secrets")
    async with running_stack(vault_key_dir=tmp_path,
                             gateway_overrides={"server": {"reload_interval_s": 0.1}}) as stack:
        damage(tmp_path / "support.key")
        await eventually(lambda: reloads(stack, SUPPORT_KEY, "failed") == 1, f"{name} counted")
        assert await outcome(stack) == "OK"  # still the old key, which the vault accepts
        assert f"{SUPPORT_KEY}: not reloaded, keeping the current one" in caplog.text
        assert problem in caplog.text
        stack.gateway.reload()  # asked again: refused again, counted again
        await eventually(lambda: reloads(stack, SUPPORT_KEY, "failed") == 2, "counted twice")
        assert reloads(stack, SUPPORT_KEY, "reloaded") == 0
        for secret in (stack.secrets.vault_support, "a-new-key-9f8e"):
            assert secret not in caplog.text


async def test_a_kubernetes_style_symlink_swap_is_seen(tmp_path: Path) -> None:
    async with running_stack(vault_key_dir=tmp_path / "plain",
                             gateway_overrides={"server": {"reload_interval_s": 0.1}}) as stack:
        # Re-point the profile at a kubelet-style volume: key -> ..data/key -> ..v1/key.
        volume = tmp_path / "volume"
        (volume / "..v1").mkdir(parents=True)
        write_private(volume / "..v1" / "support.key", (tmp_path / "plain" / "support.key")
                      .read_bytes())
        (volume / "..data").symlink_to("..v1")
        (volume / "support.key").symlink_to("..data/support.key")
        link = tmp_path / "plain" / "support.key.link"
        link.symlink_to(volume / "support.key")
        os.replace(link, tmp_path / "plain" / "support.key")  # same key, now through links
        assert await outcome(stack) == "OK"
        new = secrets.token_urlsafe(24)
        (volume / "..v2").mkdir()
        write_private(volume / "..v2" / "support.key", f"{new}\n".encode())
        (volume / "..data_tmp").symlink_to("..v2")
        os.replace(volume / "..data_tmp", volume / "..data")  # kubelet's atomic swap
        regenerate_key(stack.vault, VAULT_KEY_NAME, new)
        await outcome_becomes(stack, "OK")


async def test_a_call_in_flight_keeps_its_key_and_the_next_gets_the_new_one(
    tmp_path: Path,
) -> None:
    async with running_fault_proxy() as proxy, running_stack(
        vault_url=proxy.url, vault_key_dir=tmp_path,
        gateway_overrides={"server": {"reload_interval_s": 0}, "vault": {"timeout_ms": 5000}},
    ) as stack:
        proxy.upstream = stack.vault.base_url
        proxy.fault = Fault.late(0.5)  # the vault's answer is on its way for 0.5 s
        token = await stack.caller_token("support-tool")
        in_flight = asyncio.create_task(outcome(stack, token))
        await eventually(lambda: proxy.connections >= 1, "the call reached the vault")
        new = secrets.token_urlsafe(24)
        rotate(tmp_path / "support.key", f"{new}\n".encode())
        stack.gateway.reload()
        await eventually(lambda: reloads(stack, SUPPORT_KEY, "reloaded") == 1, "reloaded")
        regenerate_key(stack.vault, VAULT_KEY_NAME, new)  # the old key is revoked now
        assert await in_flight == "OK"
        proxy.fault = Fault()
        assert await outcome(stack, token) == "OK"  # only the new key is accepted


# --- the gateway's own TLS ----------------------------------------------------------------
def served_serial(port: int, ca_file: Path, client_cert: tuple[Path, Path]) -> int:
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(*client_cert)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_server_tls_files_reload_on_sighup_and_bad_ones_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "piigate.config.secrets")
    ca = make_ca("gateway", tmp_path)
    first, client = server_cert(ca), issue_cert(ca, cn="caller")
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live.key"
    rotate(live_cert, first.cert_pem, 0o644)
    rotate(live_key, first.key_pem)
    overrides = {"server": {"tls_cert_file": str(live_cert), "tls_key_file": str(live_key),
                            "tls_client_ca_file": str(ca.cert_file), "reload_interval_s": 0}}
    source = "server.tls_cert_file"
    async with running_stack(gateway_overrides=overrides) as stack:
        port, pair = stack.gateway.port, (client.cert_file, client.key_file)
        assert await asyncio.to_thread(served_serial, port, ca.cert_file, pair) == first.serial
        second = server_cert(ca)
        rotate(live_cert, second.cert_pem, 0o644)
        rotate(live_key, second.key_pem)
        stack.gateway.reload()
        await eventually(lambda: reloads(stack, source, "reloaded") == 1, "TLS reloaded")
        assert await asyncio.to_thread(served_serial, port, ca.cert_file, pair) == second.serial
        rotate(live_key, server_cert(ca).key_pem)  # a key that is not the certificate's
        stack.gateway.reload()
        await eventually(lambda: reloads(stack, source, "failed") == 1, "TLS refused")
        assert "key file does not belong to the certificate" in caplog.text
        assert await asyncio.to_thread(served_serial, port, ca.cert_file, pair) == second.serial


# --- TLS to the vault ---------------------------------------------------------------------
async def test_the_vault_client_certificate_reloads(tmp_path: Path) -> None:
    ca, clients = make_ca("vault", tmp_path), make_ca("clients", tmp_path / "clients")
    stranger = make_ca("stranger", tmp_path / "stranger")
    live_cert, live_key = tmp_path / "piigate.pem", tmp_path / "piigate.key"
    first = issue_cert(clients, cn="piigate")
    rotate(live_cert, first.cert_pem, 0o644)
    rotate(live_key, first.key_pem)
    keys = {"ca_file": str(ca.cert_file), "client_cert_file": str(live_cert),
            "client_key_file": str(live_key)}
    async with running_stack(
        vault_ssl=vault_server_context(server_cert(ca), clients),
        migration_ssl=migration_context(ca, issue_cert(clients, cn="migration")),
        gateway_overrides={"vault": keys, "server": {"reload_interval_s": 0.1}},
    ) as stack:
        assert await outcome(stack) == "OK"
        unknown = issue_cert(stranger, cn="piigate")  # the vault does not trust its CA
        rotate(live_key, unknown.key_pem)
        rotate(live_cert, unknown.cert_pem, 0o644)
        await outcome_becomes(stack, "VAULT_UNAVAILABLE")  # proof the new one is used
        renewed = issue_cert(clients, cn="piigate")
        rotate(live_key, renewed.key_pem)
        rotate(live_cert, renewed.cert_pem, 0o644)
        await outcome_becomes(stack, "OK")
        source = "vault.client_cert_file"
        assert reloads(stack, source, "reloaded") >= 2
        before = reloads(stack, source, "failed")
        rotate(live_cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n", 0o644)
        await eventually(lambda: reloads(stack, source, "failed") > before, "refused")
        assert await outcome(stack) == "OK"  # the renewed certificate is still in use


# --- the watcher alone ------------------------------------------------------------------
async def test_the_watcher_sees_a_rewrite_in_place_and_reports_each_outcome(
    tmp_path: Path,
) -> None:
    path = tmp_path / "key"
    write_private(path, b"one\n")
    seen: list[str] = []
    results: list[tuple[str, str]] = []

    def reload() -> bool:
        text = path.read_text().strip()
        if not text:
            raise SecretFileInvalid(f"{path} is empty")
        changed = not seen or seen[-1] != text
        seen.append(text)
        return changed

    watcher = FileWatcher([Reloadable("k", (path,), reload)], 0,
                          lambda source, outcome: results.append((source, outcome)))
    watcher.check()
    assert results == []  # nothing changed since it was built
    with path.open("r+b") as file:  # same inode, same size: only mtime/ctime move
        file.write(b"two\n")
    watcher.check()
    assert (seen, results) == (["two"], [("k", "reloaded")])
    watcher.check(everything=True)  # SIGHUP with nothing new: no outcome to report
    assert results == [("k", "reloaded")]
    path.write_bytes(b"")
    watcher.check()
    watcher.check()  # the same broken file is reported once
    assert results == [("k", "reloaded"), ("k", "failed")]


async def test_an_unexpected_error_is_logged_by_type_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def reload() -> bool:
        raise KeyError("secret-looking-value")

    path = tmp_path / "key"
    write_private(path, b"x\n")
    results: list[tuple[str, str]] = []
    watcher = FileWatcher([Reloadable("k", (path,), reload)], 0,
                          lambda source, outcome: results.append((source, outcome)))
    watcher.check(everything=True)
    assert results == [("k", "failed")]
    assert "k: not reloaded, keeping the current one: KeyError" in caplog.text
    assert "secret-looking-value" not in caplog.text
