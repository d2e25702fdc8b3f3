"""The servers under test, each started as its own process on CPU 0, and the records the
benchmark reads from them.

- `echo`: `bench.echo_server`, a bare grpc.aio echo: the ceiling the issue measures against;
- `echo-threads`: the same echo under grpc's thread-pool server, the model piigate serves
  with (`bench.server_models`): that model's own ceiling;
- `reference`: `bench.reference_gateway`, a straightforward gateway;
- `piigate`: `python -m piigate serve` with the demo's gateway configuration;
- `piigate-limits` and `piigate-redis`: the same with abuse limits on both profiles (rates
  and a distinct-subject cap set high enough never to refuse, so every call runs them),
  kept in process memory and in a real `redis-server` on loopback (`[state] backend =
  "redis"`, one script round trip per call): the price of limits that hold across replicas;
- `strong` and `strong-cached`: `bench.strong_reference`, the strong peer (grpc.aio +
  aiohttp + uvloop, PyJWT on both tokens per call, a JSON log line per call), without and
  with a verified-token cache;
- `piigate-stages`: piigate under `bench.stages` (a clock around each stage), 1 in flight:
  where a lone call's time goes;
- `piigate-miss`: piigate where every call presents a never-seen subject token;
- `piigate-batch1`, `piigate-batch10`, `piigate-batch100`: BatchDetokenize of 1 / 10 / 100
  tokens per call;
- `piigate-remote`: piigate talking to the vault through `bench.delay_proxy` (2 ms added
  per round trip, a remote vault);
- `direct-vault`, `direct-vault-apart` and `direct-vault-remote` are no server: the load
  generator sends piigate's own detokenize request straight to the vault, or through the
  delay proxy (`bench.vault_direct`). `direct-vault-apart` runs the generator on CPU 0,
  where the gateways run, so that, like a gateway, it pays a wake-up on each CPU per
  round trip (the vault is on CPU 1); `direct-vault` shares CPU 1 with the vault;
- on request only (`--servers`): `piigate-aio`, piigate's pipeline served by grpc.aio
  (`bench.server_models`), to keep the choice of server model measurable, and
  `piigate-stages-fsync`, the stage breakdown with `audit.fsync = true`.

All answer the same proto; the gateways talk to the same vault with the same keys and
profiles. `preflight` checks, with the real generated stubs, that a server answers both
profiles correctly before any load is measured: a benchmark of a misconfigured gateway
measures error paths.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from bench.stack import SERVER_CPU, Child, Stack, SubjectToken, person, start_child
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from piigate_dev import demo

SERVERS = (
    "echo", "echo-threads", "direct-vault", "direct-vault-apart", "reference", "strong",
    "strong-cached",
    "piigate", "piigate-limits", "piigate-redis", "piigate-stages", "piigate-miss",
    "piigate-batch1", "piigate-batch10", "piigate-batch100",
    "direct-vault-remote", "piigate-remote",
)  # fmt: skip
OPTIONAL_SERVERS = ("piigate-aio", "piigate-stages-fsync")
# No server: the generator calls the vault.
DIRECT = ("direct-vault", "direct-vault-apart", "direct-vault-remote")
STAGES_RECORDS = "stages.json"
STRONG_LOG = "strong-calls.jsonl"
THREADS = 256  # echo-threads' handler threads: piigate's default `handler_threads`
PIIGATE_AUDIT = "piigate-audit.jsonl"
# Limits that bind nothing under the benchmark's load, so each call pays for the checks
# and never for a refusal.
NON_BINDING_LIMITS = """
[profiles.{profile}.limits]
caller_per_s = 1000000
caller_burst = 1000000
subject_per_s = 100000
subject_burst = 100000
distinct_subjects = 1000000
distinct_window_s = 3600
"""
SUBJECT_KEY = "bench-subject-key-" + "0" * 32  # a fixed key: this is a benchmark


def with_settings(config: str, settings: Sequence[str]) -> str:
    """The TOML `config` with `section.key=value` settings (TOML values) added under their
    existing `[section]` header: an A/B of one knob without another config file."""
    lines = config.splitlines()
    for setting in settings:
        name, _, value = setting.partition("=")
        section, _, key = name.strip().rpartition(".")
        header = f"[{section}]"
        if not section or not key or not value or header not in lines:
            raise ValueError(
                f"--piigate-set {setting!r}: want SECTION.KEY=VALUE, [SECTION] existing"
            )
        lines.insert(lines.index(header) + 1, f"{key} = {value.strip()}")
    return "\n".join(lines) + "\n"


def batch_size(kind: str) -> int:
    """Tokens per call: N for `piigate-batchN`, 0 (Detokenize) for every other row."""
    return int(kind.removeprefix("piigate-batch")) if kind.startswith("piigate-batch") else 0


def start_server(
    kind: str, stack: Stack, *, loop: str, pin_cpus: bool, piigate_settings: Sequence[str] = ()
) -> Child:
    """Start `kind` on 127.0.0.1:0; for piigate, wait until its health is SERVING."""
    cpu = SERVER_CPU if pin_cpus else None
    work = stack.work
    if kind == "echo":
        return start_child("echo", ["-m", "bench.echo_server", "--loop", loop], work, cpu=cpu)
    if kind == "reference":
        env = {
            "REFERENCE_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
            "REFERENCE_VAULT_KEY_SUPPORT": stack.secrets.vault_support,
        }
        argv = ["-m", "bench.reference_gateway", "--issuer", stack.iss,
                "--vault", stack.vault_url, "--loop", loop]  # fmt: skip
        return start_child("reference", argv, work, env=env, cpu=cpu)
    if kind in ("strong", "strong-cached"):
        env = {
            "REFERENCE_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
            "REFERENCE_VAULT_KEY_SUPPORT": stack.secrets.vault_support,
        }
        argv = ["-m", "bench.strong_reference", "--issuer", stack.iss,
                "--vault", stack.vault_url, "--loop", loop, "--log", STRONG_LOG]  # fmt: skip
        if kind == "strong-cached":
            argv.append("--cache")
        return start_child(kind, argv, work, env=env, cpu=cpu)
    if kind == "echo-threads":
        argv = ["-m", "bench.server_models", kind, "--threads", str(THREADS)]
        return start_child(kind, argv, work, cpu=cpu)
    if kind.startswith("piigate"):
        vault_url = stack.delay_proxy_url() if kind == "piigate-remote" else stack.vault_url
        config = demo.gateway_config(stack.iss, vault_url, work / PIIGATE_AUDIT)
        if kind in ("piigate-limits", "piigate-redis"):
            config += "".join(NON_BINDING_LIMITS.format(profile=p)
                              for p in ("smart_on_fhir", "support"))
        if kind == "piigate-redis":
            config += (f'\n[state]\nbackend = "redis"\nurl = "{stack.redis_url()}"\n'
                       'subject_key_env = "PIIGATE_BENCH_SUBJECT_KEY"\n')
        settings = [*piigate_settings]
        if kind == "piigate-stages-fsync":
            settings.append("audit.fsync=true")
        if kind.startswith("piigate-batch"):  # a full batch in one message, whatever the default
            settings.append("server.max_request_bytes=1048576")
        (work / "gateway.toml").write_text(with_settings(config, settings))
        env = {
            "PIIGATE_DEMO_VAULT_KEY_FHIR": stack.secrets.vault_fhir,
            "PIIGATE_DEMO_VAULT_KEY_SUPPORT": stack.secrets.vault_support,
            "PIIGATE_BENCH_SUBJECT_KEY": SUBJECT_KEY,
        }
        if kind == "piigate-aio":
            # Its key sets are fetched before it announces its port.
            argv = ["-m", "bench.server_models", kind, "--config", "gateway.toml",
                    "--loop", loop]  # fmt: skip
            return start_child(kind, argv, work, env=env, cpu=cpu)
        argv = ["-m", "piigate", "serve", "--config", "gateway.toml",
                "--listen", "127.0.0.1:0", "--log-level", "WARNING"]  # fmt: skip
        if kind.startswith("piigate-stages"):
            (work / STAGES_RECORDS).unlink(missing_ok=True)
            argv[:2] = ["-m", "bench.stages", "--out", STAGES_RECORDS]
        child = start_child(kind, argv, work, env=env, cpu=cpu)
        try:
            demo.wait_until_serving(child.address)
        except BaseException:
            child.stop()
            raise
        return child
    raise ValueError(
        f"unknown server {kind!r}; choose from {', '.join(SERVERS + OPTIONAL_SERVERS)}"
    )  # the direct-vault rows start no server (bench.runs)


def preflight(
    kind: str, target: str, callers: dict[str, str], tokens: Sequence[SubjectToken]
) -> list[str]:
    """Call `target` once per token with the real stubs; the problems found (none: OK)."""
    problems: list[str] = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.DetokenizationServiceStub(channel)
        for token in tokens:
            metadata = [("authorization", f"Bearer {callers[token.caller]}")]
            try:
                answer = stub.Detokenize(
                    pb.DetokenizeRequest(subject_token=token.token), metadata=metadata, timeout=5
                )
            except grpc.RpcError as exc:
                problems.append(f"{token.caller}: {exc.code().name} {exc.details()}")
                continue
            if not kind.startswith("echo") and not _as_expected(answer, token):
                problems.append(f"{token.caller}: unexpected answer for user {token.user}")
    return problems


def preflight_batch(
    target: str, callers: dict[str, str], groups: Sequence[Sequence[SubjectToken]]
) -> list[str]:
    """One BatchDetokenize per group (one caller each); every item must be answered OK
    and correctly, in order."""
    problems: list[str] = []
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.DetokenizationServiceStub(channel)
        for group in groups:
            metadata = [("authorization", f"Bearer {callers[group[0].caller]}")]
            request = pb.BatchDetokenizeRequest(subject_tokens=[t.token for t in group])
            try:
                answer = stub.BatchDetokenize(request, metadata=metadata, timeout=10)
            except grpc.RpcError as exc:
                problems.append(f"batch of {len(group)}: {exc.code().name} {exc.details()}")
                continue
            if len(answer.results) != len(group):
                problems.append(f"batch of {len(group)}: {len(answer.results)} results")
                continue
            for token, result in zip(group, answer.results, strict=True):
                if result.status.code != 0:
                    problems.append(f"batch item: status {result.status.code} "
                                    f"{result.status.message}")  # fmt: skip
                elif not _as_expected(result.response, token):
                    problems.append(f"batch item: unexpected answer for user {token.user}")
    return problems


def _as_expected(answer: pb.DetokenizeResponse, token: SubjectToken) -> bool:
    record = person(token.user)
    fields = {f.name: (f.value, f.disclosure) for f in answer.fields}
    if token.caller == "fhir-app":
        return fields.get("user_id") == (record["user_id"], pb.DISCLOSURE_RAW)
    ssn, disclosure = fields.get("ssn", ("", 0))
    return (
        disclosure == pb.DISCLOSURE_MASKED
        and ssn.endswith(record["ssn"][-4:])
        and (fields.get("user_id") == ("", pb.DISCLOSURE_REDACTED))
    )


class JsonLinesTally:
    """Counts, by one key, the JSON lines appended to a log since the last `mark`: the
    vault's detokenize calls, piigate's audit outcomes."""

    def __init__(self, path: Path, key: Callable[[dict[str, object]], str | None]) -> None:
        self.path = path
        self.key = key
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> Counter[str]:
        if not self.path.exists():
            return Counter()
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        counts: Counter[str] = Counter()
        for line in data.split(b"\n"):
            if line.strip():
                label = self.key(json.loads(line))
                if label is not None:
                    counts[label] += 1
        return counts


def vault_detokenize_calls(path: Path) -> JsonLinesTally:
    """The vault's audit log: one line per detokenize HTTP call, whatever its outcome."""
    return JsonLinesTally(
        path, lambda e: str(e.get("outcome")) if e.get("operation") == "detokenize" else None
    )


def piigate_outcomes(path: Path) -> JsonLinesTally:
    """piigate's audit trail: one line per call, outcome allowed | denied | failed."""
    return JsonLinesTally(path, lambda e: str(e.get("outcome")))
