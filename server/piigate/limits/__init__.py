"""Abuse limits: stage 6 of the path, after the decision and before the vault.

- `abuse`: the stage itself, applying a profile's limits to one call (one store call).
- `store`: what the stage asks a store (`Admission`) and hears back (`Verdict`).
- `memory`: the in-process store, over `ratelimit` (pure token buckets and the
  distinct-subject window, the clock passed in) and `replay` (the one-time `jti` memory).
- `redis_store` and `script`: the shared store, one atomic Lua script per request.
- `health`: the shared store's readiness (`piigate.state`) and gauges.
"""
