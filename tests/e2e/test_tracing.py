"""Traces through the whole stack on loopback: the caller's W3C trace context continues
in the gateway's server span, each stage has its span, the vault's HTTP request carries
the vault span's `traceparent` (seen by a recording proxy in front of the real local
vault), and no span says a PII value, a token or a secret (the canary)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from piigate.telemetry.tracing import Tracing
from piigate_client.v1 import detokenization_pb2 as pb
from piigate_client.v1 import detokenization_pb2_grpc as pb_grpc
from tests.e2e.test_canary import PEOPLE, drive_every_path
from tests.support.stack import Stack, running_stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER = "piigate.v1.DetokenizationService/"


@dataclass
class RecordingProxy:
    """Forwards every request to `upstream` and keeps the headers it arrived with."""

    upstream: str = ""
    headers: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@asynccontextmanager
async def recording_proxy() -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy()
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def forward(request: web.Request) -> web.Response:
            proxy.headers.append(dict(request.headers))
            async with session.get(proxy.upstream + request.path_qs,
                                   headers={k: v for k, v in request.headers.items()
                                            if k.lower() != "host"},
                                   timeout=aiohttp.ClientTimeout(total=5)) as answer:
                return web.Response(status=answer.status, body=await answer.read(),
                                    content_type=answer.content_type)

        app = web.Application()
        app.router.add_get("/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            await runner.cleanup()


def children(spans: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    assert parent.context is not None
    return sorted(s.name for s in spans
                  if s.parent is not None and s.parent.span_id == parent.context.span_id)


async def call(stack: Stack, method: str, request: Any) -> tuple[Any, Any]:
    token = await stack.caller_token("support-tool")
    async with grpc.aio.insecure_channel(stack.target) as channel:
        stub = pb_grpc.DetokenizationServiceStub(channel)  # type: ignore[no-untyped-call]
        rpc = getattr(stub, method)(request, timeout=5, metadata=(
            ("authorization", f"Bearer {token}"),
            ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
            ("tracestate", "vendor=opaque"),
        ))
        return await rpc, await rpc.trailing_metadata()


async def test_a_call_continues_the_callers_trace_down_to_the_vault() -> None:
    async with recording_proxy() as proxy:
        exporter = InMemorySpanExporter()
        async with running_stack(tracing=Tracing.exporting(exporter, batch=False),
                                 vault_url=proxy.url) as stack:
            proxy.upstream = stack.vault.base_url
            response, trailers = await call(stack, "Detokenize", pb.DetokenizeRequest(
                subject_token=stack.user_token("alice")))
            events = stack.audit_events()
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.name == SERVER + "Detokenize"]
    assert server.kind is SpanKind.SERVER
    assert server.context is not None
    assert server.parent is not None
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.context.trace_state.get("vendor") == "opaque"
    assert server.attributes is not None
    assert server.attributes["piigate.request_id"] == response.request_id
    assert response.request_id == events[0]["request_id"] == dict(trailers)[
        "piigate-request-id"]
    assert children(spans, server) == ["piigate.audit", "piigate.caller", "piigate.decision",
                                       "piigate.limits", "piigate.vault"]
    (decision,) = [s for s in spans if s.name == "piigate.decision"]
    assert children(spans, decision) == ["piigate.subject"]
    (vault,) = [s for s in spans if s.name == "piigate.vault"]
    assert children(spans, vault) == ["piigate.vault.detokenize"]
    (http,) = [s for s in spans if s.name == "piigate.vault.detokenize"]
    assert http.kind is SpanKind.CLIENT
    assert http.context is not None
    (sent,) = [h for h in proxy.headers if "traceparent" in h]
    assert sent["traceparent"] == f"00-{TRACE_ID}-{http.context.span_id:016x}-01"
    assert sent["tracestate"] == "vendor=opaque"
    assert {s.context.trace_id for s in spans if s.context} == {int(TRACE_ID, 16)}


async def test_a_batch_reads_once_and_links_every_item_to_that_read() -> None:
    async with recording_proxy() as proxy:
        exporter = InMemorySpanExporter()
        async with running_stack(tracing=Tracing.exporting(exporter, batch=False),
                                 vault_url=proxy.url) as stack:
            proxy.upstream = stack.vault.base_url
            response, _ = await call(stack, "BatchDetokenize", pb.BatchDetokenizeRequest(
                subject_tokens=[stack.user_token("alice"), stack.user_token("bob"),
                                "not-a-jwt"]))
    assert [r.status.code for r in response.results] == [0, 0, 16]
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.name == SERVER + "BatchDetokenize"]
    assert children(spans, server) == ["piigate.caller"] + ["piigate.item"] * 3
    assert server.attributes is not None
    assert (server.attributes["piigate.items.allowed"],
            server.attributes["piigate.items.denied"]) == (2, 1)
    (http,) = [s for s in spans if s.name == "piigate.vault.detokenize"]
    vaults = {s.context.span_id for s in spans if s.name == "piigate.vault" and s.context}
    assert http.parent is not None
    assert len(http.links) == 1
    assert {http.parent.span_id, http.links[0].context.span_id} == vaults
    assert len([h for h in proxy.headers if "traceparent" in h]) == 1


async def test_no_span_says_a_value_a_token_or_a_secret() -> None:
    texts: list[str] = []
    tokens: list[str] = []
    exporter = InMemorySpanExporter()
    async with running_stack(people=PEOPLE,
                             tracing=Tracing.exporting(exporter, batch=False)) as stack:
        _, used = await drive_every_path(stack)
        tokens += [*used, *(u.token_id for u in stack.users.values())]
        batch = await stack.caller("support-tool")
        await batch.detokenize_many([stack.user_token("alice"), stack.user_token("bob")],
                                    adhoc_reason="canary purpose text", reason="Other")
    spans = exporter.get_finished_spans()
    assert len([s for s in spans if s.kind is SpanKind.SERVER]) == 14
    for span in spans:
        texts += [span.name, str(span.status.description)]
        texts += [f"{k}={v}" for k, v in (span.attributes or {}).items()]
        for event in span.events:
            texts += [event.name, *(f"{k}={v}" for k, v in (event.attributes or {}).items())]
        for link in span.links:
            texts += [f"{k}={v}" for k, v in (link.attributes or {}).items()]
        texts += [f"{k}={v}" for k, v in span.resource.attributes.items()]
    haystack = "\n".join(texts)
    values = [v for _, record in PEOPLE for v in record.values()]
    assert [v for v in values if v in haystack] == [], "a PII value in a span"
    assert [t[:12] for t in tokens if t and t in haystack] == [], "a token or secret in a span"
    assert "canary purpose text" not in haystack
    assert "auth0|" not in haystack  # no subject
    assert not [s for s in spans if s.events], "an exception was recorded"
