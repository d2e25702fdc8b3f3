"""gRPC and HTTP at the edges: how a call arrives and how its answer leaves.

In the order a call travels:

- `addresses`, `tls`: where piigate listens and with which (reloading) credentials.
- `bridge`: grpc's thread-pool server handing each call to the asyncio pipeline.
- `service`: wire messages in, the pipeline, wire messages out.
- `boundary`: the one place errors become gRPC statuses with an ErrorInfo.
- `readiness`, `http`: health, and the small HTTP server (metrics and `/healthz` are
  `piigate.telemetry`'s).
- `reflection`: server reflection under its v1 and v1alpha names.
- `proxies`: the outbound proxy for each URL (HTTPS_PROXY, HTTP_PROXY, NO_PROXY).
"""
