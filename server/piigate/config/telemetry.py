"""The `[telemetry]` table: traces and the log format (piigate.telemetry).

    [telemetry]
    tracing = "otlp"                          # "off" (default): no span is ever made
    otlp_endpoint = "http://otel-collector:4317"  # OTLP/gRPC; https:// for TLS
    service_name = "piigate"                  # the traces' `service.name`
    sample_ratio = 0.1                        # of traces the caller left undecided
    log_format = "json"                       # "json" (default) or "text" (development)

Tracing needs the `otlp` extra (`pip install 'piigate[otlp]'`); asking for it without the
exporter installed is a start-up problem like any other. A plain-http collector is allowed
beyond loopback (unlike the vault URL): spans carry no PII, token or secret by
construction (`piigate.telemetry.tracing`), and collectors usually sit beside the gateway
on the pod network.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yarl

from piigate.config.reader import Reader, non_empty

Tracing = Literal["off", "otlp"]
LogFormat = Literal["json", "text"]
OTLP_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.grpc"
_KEYS = {"tracing", "otlp_endpoint", "service_name", "sample_ratio", "log_format"}


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    tracing: Tracing = "off"
    otlp_endpoint: str = "http://127.0.0.1:4317"  # the OTLP/gRPC collector
    service_name: str = "piigate"
    sample_ratio: float = 1.0  # root traces kept; a caller's sampled flag is obeyed
    log_format: LogFormat = "json"


def read_telemetry(r: Reader, data: Mapping[str, Any]) -> TelemetryConfig:
    t = r.table(data, "telemetry", "telemetry")
    r.unknown_keys(t, _KEYS, "telemetry")
    tracing = r.get(t, "tracing", "telemetry", str, "off",
                    lambda v: None if v in ("off", "otlp") else "must be off or otlp")
    if tracing == "otlp" and not _installed(OTLP_EXPORTER_MODULE):
        r.problem("telemetry.tracing", "otlp needs the OTLP exporter: install piigate[otlp]")
    return TelemetryConfig(
        tracing=tracing,  # type: ignore[arg-type]
        otlp_endpoint=r.get(t, "otlp_endpoint", "telemetry", str, "http://127.0.0.1:4317",
                            _collector_url),
        service_name=r.get(t, "service_name", "telemetry", str, "piigate", non_empty),
        sample_ratio=r.get(t, "sample_ratio", "telemetry", float, 1.0, _ratio),
        log_format=r.get(t, "log_format", "telemetry", str, "json",  # type: ignore[arg-type]
                         lambda v: None if v in ("json", "text") else "must be json or text"),
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _ratio(value: float) -> str | None:
    return None if math.isfinite(value) and 0.0 <= value <= 1.0 else "must be 0..1"


def _collector_url(value: str) -> str | None:
    try:
        url = yarl.URL(value)
    except (ValueError, IndexError):
        return "must be an http(s) URL"
    if url.scheme not in ("http", "https") or not url.is_absolute() or not url.host:
        return "must be an http(s) URL"
    if url.user is not None or url.password is not None:
        return "must not carry credentials"
    if url.path not in ("", "/") or url.query_string or url.fragment:
        return "must be scheme://host:port only (OTLP/gRPC has no path)"
    return None
