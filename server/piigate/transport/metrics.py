"""Counters and gauges in Prometheus' text format, and the small HTTP endpoint that serves
them with a JSON readiness report.

Labels are configuration names and fixed codes only (outcomes, error reasons, profile and
issuer names), never a value, a token, a subject or a client-supplied string.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str
    help: str
    labels: Mapping[str, str]
    value: float


class Metrics:
    """Monotonic counters, plus gauges computed at scrape time by registered callbacks."""

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, Labels]] = Counter()
        self._help: dict[str, str] = {}
        self._gauge_sources: list[Callable[[], Iterable[Gauge]]] = []

    def counter(self, name: str, help_text: str) -> None:
        self._help[name] = help_text

    def inc(self, name: str, **labels: str) -> None:
        self._counters[(name, tuple(sorted(labels.items())))] += 1

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def gauges(self, source: Callable[[], Iterable[Gauge]]) -> None:
        self._gauge_sources.append(source)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        for name in sorted({n for n, _ in self._counters} | set(self._help)):
            lines += [f"# HELP {name} {self._help.get(name, name)}", f"# TYPE {name} counter"]
            for (n, labels), count in sorted(self._counters.items()):
                if n == name:
                    lines.append(f"{name}{_labels(labels)} {count}")
        gauges = [g for source in self._gauge_sources for g in source()]
        for name in sorted({g.name for g in gauges}):
            first = next(g for g in gauges if g.name == name)
            lines += [f"# HELP {name} {first.help}", f"# TYPE {name} gauge"]
            for g in (g for g in gauges if g.name == name):
                lines.append(f"{name}{_labels(tuple(sorted(g.labels.items())))} {g.value:g}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_app(metrics: Metrics, readiness: Callable[[], Mapping[str, object]]) -> web.Application:
    """`GET /metrics` (Prometheus text) and `GET /healthz` (JSON: ready, and per issuer
    whether its keys are usable, how old they are and the last fetch error)."""

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    async def health(_request: web.Request) -> web.Response:
        report = readiness()
        status = 200 if report.get("ready") else 503
        return web.Response(text=json.dumps(report, sort_keys=True), status=status,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", health)
    return app
