"""What the gateway tells its operators: metrics, traces and logs.

- `metrics`: every Prometheus metric (prometheus-client), in one registry per gateway,
  with the multiprocess mode of `piigate serve --workers N`.
- `endpoint`: `/metrics` and the JSON readiness report `/healthz` over HTTP, for one
  process or for all the workers of `--workers N` at once.
- `tracing`: spans of each call's path.
- `logs`: the log format and its fields.

None of them ever carries a token, a subject, a field value or client-supplied text:
only configuration names and fixed codes.
"""
