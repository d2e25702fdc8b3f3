"""Traces of each call's path (OpenTelemetry), and nothing at all when tracing is off.

One call, as a trace:

    piigate.v1.DetokenizationService/Detokenize   SERVER; parent: the caller's `traceparent`
    ├── piigate.caller          stages 1–2: the caller's credential, its profile
    ├── piigate.decision        stages 3–5: the decision sequence (`SubjectDecider.decide`)
    │   └── piigate.subject     stage 3: the item's token verified (subject or actor token)
    ├── piigate.limits          stage 6: abuse limits, one-time tokens
    ├── piigate.vault           stage 7: this item's wait for its fields
    │   └── piigate.vault.detokenize   CLIENT: the HTTP call, which carries `traceparent`
    └── piigate.audit           stage 9: the audit event written

A BatchDetokenize has one `piigate.item` span per subject token under the server span,
each holding that item's stages. A vault call shared by several items or calls (a batch's
group, the coalescer's batch) is one CLIENT span: its parent is the vault span of the
first item it serves, and every other item's vault span is a span link, so each call's
trace still leads to the HTTP call that served it.

What a span may say is fixed here and nowhere else: the method, the request id, the
caller's client id and profile (configuration-level names), outcome, error reason, batch
size and counts. Never a token, token id, subject, field name or value, nor the caller's
`adhoc_reason`; exceptions are never recorded (their text could hold a value), only the
error's reason code.

Off is the default, and then nothing here runs: the pipeline holds `NO_TRACING`, whose
`on` is False, and each hook is that one attribute check. No span object is made, no
context is attached, no metadata is read. On, a call its trace leaves unsampled (the
caller's flag, or `sample_ratio` for a trace piigate starts) makes no stage spans: only
its server span and the vault call's, which tell the vault "not sampled".

The SDK is configured explicitly (sampler, resource, processor, exporter endpoint), so the
SDK's own `OTEL_*` variables do not change what piigate's config says; the OTLP exporter
still reads `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_CERTIFICATE`, which is
where a collector's credentials belong (never in the config file).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from piigate.errors import GatewayError

if TYPE_CHECKING:
    from piigate.config import Profile
    from piigate.config.telemetry import TelemetryConfig
    from piigate.identity.caller import Caller
    from piigate.pipeline import Call, Result
    from piigate.tokens.verification import VerifiedToken
    from piigate.tokens.verifier import TokenVerifier
    from piigate.vault.client import DetokenizeQuery, VaultClient
    from piigate.vault.reads import Read

T = TypeVar("T")
SERVICE = "piigate.v1.DetokenizationService"
CALLER, DECISION, SUBJECT, LIMITS, VAULT, AUDIT = (
    "piigate.caller", "piigate.decision", "piigate.subject", "piigate.limits",
    "piigate.vault", "piigate.audit",
)  # fmt: skip
ITEM, VAULT_HTTP = "piigate.item", "piigate.vault.detokenize"
# gRPC codes a SERVER span marks as an error (OpenTelemetry's RPC conventions); the
# others are the caller's doing and leave the status unset.
_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
_PROPAGATOR = TraceContextTextMapPropagator()
# Spans buffered for export before the oldest are dropped; a slow collector never holds
# a call up (the batch processor exports from its own thread).
_QUEUE, _BATCH, _DELAY_MS, _EXPORT_TIMEOUT_MS = 8192, 512, 2000, 10_000


class _Metadata(Getter[Sequence[tuple[str, "str | bytes"]]]):
    """W3C trace context from gRPC metadata (keys arrive lower-case; `-bin` values are
    bytes and never trace context)."""

    def get(self, carrier: Sequence[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, str | bytes]]) -> list[str]:
        return [k for k, _ in carrier]


_METADATA = _Metadata()


class Tracing:
    """The gateway's tracer, or (`NO_TRACING`) nothing. `on` is the one thing the hot
    path reads when tracing is off."""

    __slots__ = ("_provider", "_tracer", "on")

    def __init__(self, provider: TracerProvider | None) -> None:
        self.on = provider is not None
        self._provider = provider
        self._tracer = provider.get_tracer("piigate") if provider is not None else None

    @classmethod
    def exporting(cls, exporter: SpanExporter, *, service_name: str = "piigate",
                  sample_ratio: float = 1.0, batch: bool = True) -> Tracing:
        """Tracing to `exporter` (batch: from a background thread; else synchronously,
        as tests with an in-memory exporter want)."""
        processor: SpanProcessor = (
            BatchSpanProcessor(exporter, max_queue_size=_QUEUE, max_export_batch_size=_BATCH,
                               schedule_delay_millis=_DELAY_MS,
                               export_timeout_millis=_EXPORT_TIMEOUT_MS)
            if batch else SimpleSpanProcessor(exporter))
        provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource({"service.name": service_name}),
            shutdown_on_exit=False,
            # A shared vault call links every call it served: up to a coalesced batch.
            span_limits=SpanLimits(max_links=1024),
        )
        provider.add_span_processor(processor)
        return cls(provider)

    async def aclose(self) -> None:
        """Export what is buffered and stop (the exporter's own timeout bounds it)."""
        if self._provider is not None:
            await asyncio.to_thread(self._provider.shutdown)

    # --- the call and its items -----------------------------------------------------
    async def serve(self, call: Call, run: Callable[[Call], Awaitable[list[Result]]]
                    ) -> list[Result]:
        """`run(call)` inside the call's SERVER span, continuing the caller's trace."""
        assert self._tracer is not None
        method = "BatchDetokenize" if call.batch else "Detokenize"
        attributes: dict[str, str | int] = {
            "rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method,
            "piigate.request_id": call.request_id,
        }
        if call.batch:
            attributes["piigate.batch_size"] = len(call.items())
        span = self._tracer.start_span(
            f"{SERVICE}/{method}", _PROPAGATOR.extract(call.metadata, getter=_METADATA),
            SpanKind.SERVER, attributes, record_exception=False,
            set_status_on_exception=False)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            results = await run(call)
        except GatewayError as exc:
            _outcome(span, exc, server=True)
            raise
        except BaseException:
            span.set_attribute("rpc.grpc.status_code", 13)
            span.set_status(Status(StatusCode.ERROR))
            raise
        else:
            _results(span, results, call.batch)
            return results
        finally:
            otel_context.detach(token)
            span.end()

    async def item(self, work: Coroutine[Any, Any, Result]) -> Result:
        """A batch item's path in its own `piigate.item` span."""
        assert self._tracer is not None
        if not trace.get_current_span().is_recording():
            return await work
        with self._tracer.start_as_current_span(ITEM, record_exception=False,
                                                set_status_on_exception=False) as span:
            result = await work
            span.set_attribute("piigate.request_id", result.request_id)
            if isinstance(result.outcome, GatewayError):
                _outcome(span, result.outcome)
            else:
                span.set_attribute("piigate.outcome", "allowed")
            return result

    # --- the stages -------------------------------------------------------------------
    async def stage(self, name: str, work: Awaitable[T]) -> T:
        """`work` as the stage `name`: a child of the current span, current while it
        runs (so a stage's own spans, e.g. the subject's verification, nest in it).
        In a trace that is not sampled, nothing: a span nobody records costs as much to
        make as one that is."""
        assert self._tracer is not None
        if not trace.get_current_span().is_recording():
            return await work
        span = self._tracer.start_span(name, record_exception=False,
                                       set_status_on_exception=False)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await work
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    async def caller_stage(self, work: Awaitable[tuple[Caller, Profile]]
                           ) -> tuple[Caller, Profile]:
        """Stages 1–2; the caller's client id and profile go on the call's span too."""
        call = trace.get_current_span()
        caller, profile = await self.stage(CALLER, work)
        if caller.client_id is not None:
            call.set_attribute("piigate.caller", caller.client_id)
        call.set_attribute("piigate.profile", profile.name)
        return caller, profile

    async def vault_stage(self, read: Callable[[Read], Awaitable[T]], item: Read) -> T:
        """Stage 7 for one item: the read carries its span's context down to the vault
        call that serves it (which may serve others too). Unsampled, the call's own
        context goes down instead, so the vault is still told "not sampled"."""
        assert self._tracer is not None
        current = trace.get_current_span()
        if not current.is_recording():
            return await read(dataclasses.replace(item, trace=current.get_span_context()))
        with self._tracer.start_as_current_span(VAULT, record_exception=False,
                                                set_status_on_exception=False) as span:
            try:
                return await read(dataclasses.replace(item, trace=span.get_span_context()))
            except BaseException as exc:
                _failed(span, exc)
                raise


class _TracedVerifier:
    """A verifier whose every verification is a `piigate.subject` span; forwards
    everything else to the verifier it wraps."""

    def __init__(self, verifier: TokenVerifier, tracing: Tracing) -> None:
        self._verifier = verifier
        self._tracing = tracing

    async def verify(self, token: str, *args: Any, **kwargs: Any) -> VerifiedToken:
        return await self._tracing.stage(SUBJECT, self._verifier.verify(token, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._verifier, name)


def subject_verifier(verifier: TokenVerifier, tracing: Tracing) -> TokenVerifier:
    """The subject stage's verifier: `verifier` itself with tracing off, else the same
    in a span per verification. Only the subject stage's: the caller's credential is
    verified inside the caller stage's span."""
    if not tracing.on:
        return verifier
    return cast("TokenVerifier", _TracedVerifier(verifier, tracing))  # same interface


class TracedVault:
    """The vault client with each HTTP call in a CLIENT span whose `traceparent` goes
    out with the request (installed only when tracing is on, below the coalescer)."""

    def __init__(self, client: VaultClient, tracing: Tracing) -> None:
        self._client = client
        self._tracer = tracing._tracer

    async def detokenize(self, query: DetokenizeQuery, timeout_s: float
                         ) -> dict[str, Mapping[str, Any]]:
        served = query.trace
        if self._tracer is None or not served:
            return await self._client.detokenize(query, timeout_s)
        parent = trace.set_span_in_context(trace.NonRecordingSpan(served[0]),
                                           otel_context.Context())
        span = self._tracer.start_span(
            VAULT_HTTP, parent, SpanKind.CLIENT,
            {"http.request.method": "GET", "piigate.vault.token_count": len(query.token_ids),
             "piigate.vault.calls_served": len(served)},
            links=[Link(c) for c in _distinct(served[1:], served[0])],
            record_exception=False, set_status_on_exception=False)
        headers: dict[str, str] = {}
        _PROPAGATOR.inject(headers, trace.set_span_in_context(span))
        try:
            return await self._client.detokenize(query, timeout_s, headers=headers)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()


def tracing_from_config(config: TelemetryConfig) -> Tracing:
    """The gateway's tracing as configured: `NO_TRACING`, or OTLP/gRPC export."""
    if config.tracing == "off":
        return NO_TRACING
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint,
                                insecure=config.otlp_endpoint.startswith("http://"),
                                timeout=_EXPORT_TIMEOUT_MS / 1000)
    return Tracing.exporting(exporter, service_name=config.service_name,
                             sample_ratio=config.sample_ratio)


NO_TRACING = Tracing(None)


# --- what a span may say ------------------------------------------------------------
def _outcome(span: trace.Span, error: GatewayError, server: bool = False) -> None:
    span.set_attribute("piigate.outcome", error.audit_outcome)
    span.set_attribute("piigate.error_reason", error.reason)
    code = int(error.code.value[0])
    if server:
        span.set_attribute("rpc.grpc.status_code", code)
    if error.audit_outcome == "failed" and (not server or code in _SERVER_ERRORS):
        span.set_status(Status(StatusCode.ERROR))


def _failed(span: trace.Span, exc: BaseException) -> None:
    if isinstance(exc, GatewayError):
        _outcome(span, exc)
    elif isinstance(exc, asyncio.CancelledError):
        span.set_attribute("piigate.error_reason", "CALL_CANCELLED")
    else:  # the type's name only: never the exception's text
        span.set_attribute("piigate.error_reason", "INTERNAL")
        span.set_status(Status(StatusCode.ERROR))


def _results(span: trace.Span, results: list[Result], batch: bool) -> None:
    span.set_attribute("rpc.grpc.status_code", 0)
    if not batch:
        (result,) = results
        if isinstance(result.outcome, GatewayError):
            _outcome(span, result.outcome, server=True)
        else:
            span.set_attribute("piigate.outcome", "allowed")
        return
    counts = {"allowed": 0, "denied": 0, "failed": 0}
    for result in results:
        outcome = result.outcome
        counts[outcome.audit_outcome if isinstance(outcome, GatewayError) else "allowed"] += 1
    for name, count in counts.items():
        span.set_attribute(f"piigate.items.{name}", count)


def _distinct(contexts: Sequence[SpanContext], first: SpanContext) -> list[SpanContext]:
    seen = {first.span_id}
    out = []
    for c in contexts:
        if c.span_id not in seen:
            seen.add(c.span_id)
            out.append(c)
    return out
