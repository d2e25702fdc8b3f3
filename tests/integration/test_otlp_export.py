"""`[telemetry] tracing = "otlp"` for real: a call's spans reach an OTLP/gRPC collector
(a minimal TraceService on loopback) with the configured service name, and closing the
gateway's tracing flushes what was buffered."""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
import pytest

from piigate.config.telemetry import TelemetryConfig
from piigate.pipeline import Call
from piigate.policy.decision import DisclosureRequest
from piigate.telemetry.tracing import tracing_from_config
from tests.support.pipeline_fakes import build

collector_pb2 = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2",
    reason="the optional `otlp` extra (and its protos) is not installed here")
collector_grpc = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
    reason="the optional `otlp` extra (and its protos) is not installed here")


class Collector(collector_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.received = threading.Event()

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        self.received.set()
        return collector_pb2.ExportTraceServiceResponse()


async def test_spans_reach_the_collector_under_the_service_name() -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    collector_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        tracing = tracing_from_config(TelemetryConfig(
            tracing="otlp", otlp_endpoint=f"http://127.0.0.1:{port}", service_name="gw-test"))
        parts = build(tracing=tracing)
        await parts.pipeline.run(Call((), None, None, ("alice",),
                                      DisclosureRequest((), None, "")))
        await tracing.aclose()  # flushes the batch processor
        assert collector.received.wait(10)
    finally:
        server.stop(0).wait(5)
    names, services = [], set()
    for request in collector.requests:
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"}
            names += [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert services == {"gw-test"}
    assert "piigate.v1.DetokenizationService/Detokenize" in names
    assert "piigate.audit" in names
