"""The audit trail as a readiness input, through a real gRPC health service on loopback:
NOT_SERVING (overall and `piigate.audit`) from the first failed write, SERVING again once
the sink recovers by itself; `/healthz`'s report and the metrics say the same.

The sink writes a real file; the disk fails on demand through the `Disk` it is given.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from piigate.audit.event import AuditEvent
from piigate.audit.health import Recovery
from piigate.audit.sink import ChainedJsonLinesSink
from piigate.audit.trail import Disk
from piigate.errors import AuditUnavailable
from piigate.telemetry.metrics import GatewayMetrics
from piigate.transport.readiness import AUDIT_SERVICE, IssuerReadiness
from tests.support.audit_events import numbered_event as event

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OVERALL = ("", "piigate.v1.DetokenizationService")
WAIT_S = 10.0  # only a hang reaches it
FAST = Recovery(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=1.0)


class FullDisk:
    """Real system calls, but writes fail with ENOSPC while `full`."""

    def __init__(self) -> None:
        self.full = False

    def write(self, fd: int, data: bytes) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


@asynccontextmanager
async def health_service(
    readiness_for: Callable[[health.HealthServicer], IssuerReadiness],
) -> AsyncIterator[tuple[IssuerReadiness, health_pb2_grpc.HealthStub]]:
    """A gRPC server on 127.0.0.1:0 serving only grpc.health.v1, and a stub for it."""
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        readiness = readiness_for(servicer)
        readiness.publish()
        yield readiness, health_pb2_grpc.HealthStub(channel)
    finally:
        channel.close()
        server.stop(None).wait(WAIT_S)


async def status(stub: health_pb2_grpc.HealthStub, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    response = await asyncio.to_thread(stub.Check, request, timeout=WAIT_S)
    return int(response.status)


async def statuses(stub: health_pb2_grpc.HealthStub) -> set[int]:
    return {await status(stub, s) for s in (*OVERALL, AUDIT_SERVICE)}


async def test_health_follows_the_trail_down_and_back_up(tmp_path: Path) -> None:
    disk = FullDisk()
    sink = ChainedJsonLinesSink.open(tmp_path / "audit.jsonl", fsync=True,
                                     disk=Disk(write=disk.write), recovery=FAST)
    metrics = GatewayMetrics()
    metrics.watch({}, sink)
    async with health_service(lambda h: IssuerReadiness({}, h, OVERALL, sink)) as (ready, stub):
        await sink.write(event(1))
        assert await statuses(stub) == {SERVING}
        disk.full = True
        with pytest.raises(AuditUnavailable):
            await sink.write(event(2))
        # Published by the sink's own notice, not by the next pass of the readiness loop.
        assert await statuses(stub) == {NOT_SERVING}
        report = ready.report()
        assert report["ready"] is False
        assert report["audit"] == {"ready": False, "failures": 1, "recoveries": 0,
                                   "unrecorded": 1, "last_error": "ENOSPC"}
        assert metrics.value("piigate_audit_ready") == 0.0
        assert metrics.value("piigate_audit_unrecorded_total") == 1

        disk.full = False
        for _ in range(int(WAIT_S / 0.01)):
            if await statuses(stub) == {SERVING}:
                break
            await asyncio.sleep(0.01)
        assert await statuses(stub) == {SERVING}
        await sink.write(event(3))
        assert (metrics.value("piigate_audit_ready"),
                metrics.value("piigate_audit_recoveries_total")) == (1.0, 1)
        assert ready.ready()
    await sink.close()


async def test_a_sink_without_health_adds_no_service(tmp_path: Path) -> None:
    class PlainSink:
        async def write(self, event: AuditEvent) -> None: ...

        async def close(self) -> None: ...

    async with health_service(lambda h: IssuerReadiness({}, h, OVERALL, PlainSink())) as (
        ready, stub
    ):
        assert await status(stub, "") == SERVING
        with pytest.raises(grpc.RpcError) as missing:
            await status(stub, AUDIT_SERVICE)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "audit" not in ready.report()
