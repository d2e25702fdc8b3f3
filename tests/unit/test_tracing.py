"""Tracing: the span tree of a call through the real pipeline (fakes at its edges only),
what a span may say, the vault span's parent and links, and nothing at all when off."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags

from piigate.config import ConfigError, parse_config
from piigate.config.reader import Reader
from piigate.config.telemetry import read_telemetry
from piigate.errors import VaultUnavailable
from piigate.pipeline import Call, DetokenizationPipeline
from piigate.policy.decision import DisclosureRequest
from piigate.telemetry import tracing
from piigate.telemetry.tracing import NO_TRACING, TracedVault, Tracing
from piigate.vault.client import DetokenizeQuery
from piigate.vault.coalescing import CoalescingVault
from tests.support.pipeline_fakes import build

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def traced() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing.exporting(exporter, batch=False), exporter


def call(*tokens: str, batch: bool = False,
         metadata: tuple[tuple[str, str | bytes], ...] = (("traceparent", TRACEPARENT),)
         ) -> Call:
    return Call(metadata, None, None, tokens, DisclosureRequest((), None, ""),
                batch=batch or len(tokens) != 1)


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        out.setdefault(span.name, []).append(span)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_tracing_off_is_one_shared_object_that_makes_nothing() -> None:
    parts = build()
    assert parts.pipeline._tracing is NO_TRACING
    assert NO_TRACING.on is False
    assert tracing.tracing_from_config(parts.config.telemetry) is NO_TRACING


async def test_a_call_continues_the_callers_trace_with_a_span_per_stage() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    ((request_id, outcome),) = await parts.pipeline.run(call("alice"))
    assert not isinstance(outcome, Exception)
    spans = by_name(exporter.get_finished_spans())
    (server,) = spans["piigate.v1.DetokenizationService/Detokenize"]
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert server.parent is not None
    assert (f"{server.context.trace_id:032x}", f"{server.parent.span_id:016x}") == (
        TRACE_ID, PARENT_ID)
    assert server.parent.is_remote
    assert dict(server.attributes or {}) == {
        "rpc.system": "grpc", "rpc.service": "piigate.v1.DetokenizationService",
        "rpc.method": "Detokenize", "rpc.grpc.status_code": 0,
        "piigate.request_id": request_id, "piigate.caller": "support-tool",
        "piigate.profile": "support", "piigate.outcome": "allowed",
    }
    assert request_id == parts.sink.events[0].request_id
    for stage in ("piigate.caller", "piigate.decision", "piigate.limits", "piigate.vault",
                  "piigate.audit"):
        (span,) = spans[stage]
        assert parent_of(span) == server.context.span_id, stage
        assert span.status.status_code is StatusCode.UNSET


async def test_a_refusal_names_its_stage_and_reason_but_no_error_status() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    ((_, outcome),) = await parts.pipeline.run(call("stranger"))  # an unknown token
    assert getattr(outcome, "reason", None) == "TOKEN_MALFORMED"
    spans = by_name(exporter.get_finished_spans())
    (server,) = spans["piigate.v1.DetokenizationService/Detokenize"]
    assert server.attributes is not None
    assert (server.attributes["piigate.outcome"], server.attributes["piigate.error_reason"],
            server.attributes["rpc.grpc.status_code"]) == ("denied", "TOKEN_MALFORMED", 16)
    assert server.status.status_code is StatusCode.UNSET  # the caller's doing, not ours
    (decision,) = spans["piigate.decision"]
    assert decision.attributes is not None
    assert decision.attributes["piigate.error_reason"] == "TOKEN_MALFORMED"
    assert "piigate.limits" not in spans
    assert "piigate.vault" not in spans
    assert [s.events for s in exporter.get_finished_spans() if s.events] == []


async def test_a_refused_caller_ends_in_the_caller_stage() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    parts.callers.client_id = None
    with pytest.raises(Exception, match="CALLER_CREDENTIAL_MISSING"):
        await parts.pipeline.run(call("alice"))
    spans = by_name(exporter.get_finished_spans())
    (server,) = spans["piigate.v1.DetokenizationService/Detokenize"]
    assert server.attributes is not None
    assert server.attributes["piigate.error_reason"] == "CALLER_CREDENTIAL_MISSING"
    assert server.attributes["piigate.request_id"] == parts.sink.events[0].request_id
    assert "piigate.audit" in spans  # the refusal's event was still written, in its span


async def test_a_failure_of_piigate_marks_the_spans_as_errors() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    parts.vault.failure = VaultUnavailable()
    await parts.pipeline.run(call("alice"))
    spans = by_name(exporter.get_finished_spans())
    (vault,) = spans["piigate.vault"]
    (server,) = spans["piigate.v1.DetokenizationService/Detokenize"]
    assert vault.status.status_code is StatusCode.ERROR
    assert server.status.status_code is StatusCode.ERROR  # UNAVAILABLE is a server error
    assert vault.status.description is None  # never an exception's text


async def test_a_batch_has_an_item_span_per_token_and_counts() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    results = await parts.pipeline.run(call("alice", "stranger", "bob", batch=True))
    spans = by_name(exporter.get_finished_spans())
    (server,) = spans["piigate.v1.DetokenizationService/BatchDetokenize"]
    assert server.attributes is not None
    assert {k: v for k, v in server.attributes.items() if k.startswith("piigate.")} == {
        "piigate.request_id": parts.sink.events[0].batch_id, "piigate.batch_size": 3,
        "piigate.caller": "support-tool", "piigate.profile": "support",
        "piigate.items.allowed": 2, "piigate.items.denied": 1, "piigate.items.failed": 0,
    }
    items = spans["piigate.item"]
    assert sorted(str((s.attributes or {})["piigate.request_id"]) for s in items) == sorted(
        r.request_id for r in results)
    assert server.context is not None
    assert {parent_of(s) for s in items} == {server.context.span_id}
    item_ids = {s.context.span_id for s in items if s.context is not None}
    assert {parent_of(s) for s in spans["piigate.decision"]} == item_ids
    # The two allowed items share one vault read: both carry their vault span down.
    (query,) = parts.vault.queries
    vault_spans = {s.context.span_id for s in spans["piigate.vault"] if s.context is not None}
    assert {c.span_id for c in query.trace} == vault_spans
    assert len(query.trace) == 2


class HeaderClient:
    """The vault client's interface, recording what it was asked to send."""

    def __init__(self) -> None:
        self.headers: list[Mapping[str, str]] = []

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float,
                         headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        self.headers.append(dict(headers or {}))
        await asyncio.sleep(0.01)  # long enough for others to gather behind this call
        return {t: {"ssn": "x"} for t in query.token_ids}


def member(n: int) -> SpanContext:
    return SpanContext(int(TRACE_ID, 16) + n, 0x1000 + n, is_remote=False,
                       trace_flags=TraceFlags(TraceFlags.SAMPLED))


def query(token: str, trace: tuple[SpanContext, ...]) -> DetokenizeQuery:
    return DetokenizeQuery("users", (token,), ("ssn",), "AppFunctionality", None, "k",
                           trace=trace)


async def test_a_shared_vault_call_has_the_first_member_as_parent_and_links_the_rest() -> None:
    t, exporter = traced()
    client = HeaderClient()
    vault = CoalescingVault(TracedVault(client, t),  # type: ignore[arg-type]
                            max_wait_s=0.005, max_batch=8, max_inflight=1)
    await asyncio.gather(*(vault.detokenize(query(f"t{n}", (member(n),)), 1.0)
                           for n in range(4)))
    await vault.aclose()
    calls = [s for s in exporter.get_finished_spans() if s.name == "piigate.vault.detokenize"]
    assert len(calls) == 2  # the first alone, then the three that gathered behind it
    shared = next(s for s in calls if len(s.links) == 2)
    assert shared.kind is SpanKind.CLIENT
    assert shared.parent is not None
    assert shared.parent.span_id == member(1).span_id
    assert [link.context.span_id for link in shared.links] == [member(2).span_id,
                                                               member(3).span_id]
    assert shared.attributes is not None
    assert shared.attributes["piigate.vault.calls_served"] == 3
    # The header sent is the CLIENT span's own context, in the first member's trace.
    sent = client.headers[1]["traceparent"]
    assert shared.context is not None
    assert sent == f"00-{member(1).trace_id:032x}-{shared.context.span_id:016x}-01"


async def test_a_vault_call_without_trace_context_sends_none() -> None:
    t, exporter = traced()
    client = HeaderClient()
    await TracedVault(client, t).detokenize(query("t", ()), 1.0)  # type: ignore[arg-type]
    assert client.headers == [{}]
    assert exporter.get_finished_spans() == ()


async def test_metadata_without_trace_context_starts_a_new_trace_and_bytes_are_ignored() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    await parts.pipeline.run(call("alice", metadata=(("traceparent-bin", b"\x00"),
                                                     ("traceparent", "garbage"))))
    (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.parent is None


async def test_an_unsampled_caller_trace_records_nothing() -> None:
    t, exporter = traced()
    parts = build(tracing=t)
    await parts.pipeline.run(call("alice", metadata=(
        ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-00"),)))
    assert exporter.get_finished_spans() == ()
    ((sent,),) = [q.trace for q in parts.vault.queries]  # still told: not sampled
    assert (f"{sent.trace_id:032x}", sent.trace_flags.sampled) == (TRACE_ID, False)


def telemetry(**values: Any) -> list[str]:
    data = {"vault": {"url": "http://127.0.0.1:8123"},
            "issuers": [{"name": "dev", "issuer": "http://127.0.0.1:9/",
                         "jwks_uri": "http://127.0.0.1:9/jwks"}],
            "profiles": {}, "telemetry": values}
    try:
        parse_config(data, {}, Path("."))
    except ConfigError as exc:
        return [p for p in exc.problems if p.startswith("telemetry")]
    return []


def test_telemetry_config_is_checked_key_by_key() -> None:
    assert telemetry() == []
    assert telemetry(otlp_endpoint="https://collector.internal:4317", sample_ratio=0,
                     service_name="gw", log_format="text") == []
    assert telemetry(tracing="zipkin", sample_ratio=1.5, otlp_endpoint="http://c:4317/v1",
                     service_name="", log_format="xml", color=True) == [
        "telemetry.color: unknown key",
        "telemetry.tracing: must be off or otlp",
        "telemetry.otlp_endpoint: must be scheme://host:port only (OTLP/gRPC has no path)",
        "telemetry.service_name: must not be empty",
        "telemetry.sample_ratio: must be 0..1",
        "telemetry.log_format: must be json or text",
    ]
    assert telemetry(otlp_endpoint="http://user:pw@c:4317") == [
        "telemetry.otlp_endpoint: must not carry credentials"]


def test_otlp_without_its_exporter_is_a_config_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("piigate.config.telemetry._installed", lambda module: False)
    assert telemetry(tracing="otlp") == [
        "telemetry.tracing: otlp needs the OTLP exporter: install piigate[otlp]"]


def test_otlp_tracing_builds_an_exporting_tracer() -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc",
                        reason="the optional `otlp` extra is not installed here")
    reader = Reader({}, Path("."))
    config = read_telemetry(reader, {"telemetry": {"tracing": "otlp",
                                                   "otlp_endpoint": "http://127.0.0.1:4317"}})
    assert reader.problems == []
    built = tracing.tracing_from_config(config)
    assert built.on
    asyncio.run(built.aclose())


def test_the_pipeline_checks_only_one_attribute_when_off() -> None:
    # The contract the hot path relies on: with tracing off, nothing but `on` is read.
    class Refusing(Tracing):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            if name != "on":
                raise AssertionError(f"read {name} with tracing off")
            return object.__getattribute__(self, name)

    off = Refusing(None)
    parts = build(tracing=off)
    assert isinstance(parts.pipeline, DetokenizationPipeline)
    results = asyncio.run(parts.pipeline.run(call("alice", "bob", batch=True)))
    assert len(results) == 2
