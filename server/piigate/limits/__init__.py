"""Abuse limits: stage 6 of the path, after the decision and before the vault.

- `ratelimit`: pure token buckets and the distinct-subject window, the clock passed in.
- `replay`: the one-time `jti` memory.
- `abuse`: the stage itself, applying a profile's limits to one call.
"""
