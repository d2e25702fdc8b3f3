"""Container health check: does piigate answer gRPC health on ADDRESS?

    python healthcheck.py 127.0.0.1:50051            # alive: any answer (liveness)
    python healthcheck.py --ready 127.0.0.1:50051    # ready: the overall service SERVING
    python healthcheck.py --ca ca.pem HOST:PORT      # when piigate serves TLS

Exit 0 when healthy, 1 otherwise. Plain liveness deliberately accepts NOT_SERVING: the
gateway says NOT_SERVING while an identity provider's keys are unusable, and restarting it
then would only lose its caches.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--ready", action="store_true")
    parser.add_argument("--ca", type=Path)
    parser.add_argument("--timeout-s", type=float, default=2.0)
    args = parser.parse_args()
    if args.ca is not None:
        creds = grpc.ssl_channel_credentials(args.ca.read_bytes())
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=args.timeout_s)
        except grpc.RpcError:
            return 1
    if args.ready:
        return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
