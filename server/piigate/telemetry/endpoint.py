"""`/metrics` and `/healthz` over HTTP (`server.metrics_listen`), for one gateway process
or, under `piigate serve --workers N`, for all its workers at once.

One process serves its own registry and readiness report. With workers, the supervisor
alone listens (`piigate.telemetry.metrics`, rule 6): `/metrics` merges the workers'
memory-mapped files with prometheus-client's `MultiProcessCollector`, and `/healthz`
reads the readiness report each worker rewrites every `PUBLISH_INTERVAL_S` into the
same directory (`healthz-<i>.json`, replaced atomically). A worker whose report is
missing or older than `READINESS_STALE_S` (hung, or gone) makes the whole target not
ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from piigate.telemetry.metrics import GatewayMetrics

PUBLISH_INTERVAL_S = 1.0  # a worker's refresh of its read-off values and its report
READINESS_STALE_S = 5.0  # a worker whose report is older counts as not ready

#: `exposition(accept_header)`: the body and its content type.
Exposition = Callable[[str | None], tuple[bytes, str]]


def metrics_app(exposition: Exposition,
                readiness: Callable[[], Mapping[str, object]]) -> web.Application:
    """`GET /metrics` (Prometheus text, or OpenMetrics when the scraper asks for it) and
    `GET /healthz` (JSON: ready, and per issuer whether its keys are usable, how old
    they are and the last fetch error; 503 while not ready)."""

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def health(_request: web.Request) -> web.Response:
        report = readiness()
        status = 200 if report.get("ready") else 503
        return web.Response(text=json.dumps(report, sort_keys=True), status=status,
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", health)
    return app


# --- the workers' side --------------------------------------------------------------------
def readiness_file(directory: Path, worker: int) -> Path:
    return directory / f"healthz-{worker}.json"


async def publish_from_worker(metrics: GatewayMetrics, worker: int,
                              readiness: Callable[[], Mapping[str, object]]) -> None:
    """Until cancelled: refresh the values read off other parts (so they reach the
    shared files) and publish this worker's readiness report for the supervisor."""
    directory = metrics.multiprocess_dir
    if directory is None:
        raise ValueError("publish_from_worker needs a worker's metrics")
    target = readiness_file(directory, worker)
    staging = target.with_suffix(".tmp")
    while True:
        metrics.refresh()
        staging.write_text(json.dumps({**readiness(), "pid": os.getpid()}, sort_keys=True))
        staging.replace(target)  # atomic: the supervisor never reads half a report
        await asyncio.sleep(PUBLISH_INTERVAL_S)


# --- the supervisor's side ----------------------------------------------------------------
class WorkerMetrics:
    """What the supervisor of `--workers N` serves: every worker's metrics merged (counters
    and histograms summed, each gauge by its multiprocess mode) and their readiness."""

    def __init__(self, directory: Path, workers: int) -> None:
        self.directory = directory
        self._workers = workers
        self._registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self._registry, path=str(directory))  # type: ignore[no-untyped-call]

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        encode, content_type = choose_encoder(accept or "")
        return encode(self._registry), content_type

    def readiness(self) -> dict[str, object]:
        """Ready when every worker published a ready report within READINESS_STALE_S;
        each worker's own report (a single process's shape, plus its pid) by index."""
        reports: dict[str, object] = {}
        ready = True
        now = time.time()
        for worker in range(self._workers):
            path = readiness_file(self.directory, worker)
            try:
                fresh = now - path.stat().st_mtime <= READINESS_STALE_S
                report = json.loads(path.read_text())
            except (OSError, ValueError):
                reports[str(worker)] = {"ready": False, "last_error": "no report"}
                ready = False
                continue
            if not fresh:
                report = {**report, "ready": False, "last_error": "report is stale"}
            reports[str(worker)] = report
            ready = ready and bool(report.get("ready"))
        return {"ready": ready, "workers": reports}

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters stay: they never go back)."""
        with contextlib.suppress(OSError):
            mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
