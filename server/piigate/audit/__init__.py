"""The audit trail: stage 9 of the path; one event for every decision, allowed or not.

- `event`: the typed event and its canonical JSON, with no PII in any field.
- `recorder`: the one place that turns every outcome into its event.
- `format`: the hash-chained JSON Lines format: canonical lines, `prev`, genesis, repair markers.
- `sink`: the chained sink: group-commit fsync, cutting failed writes back, recovery.
- `health`: the sink's health, its failure counts and retry policy (a readiness input).
- `trail`: the trail file it writes (lock, tail read back, torn final line cut) or stdout.
- `verify`: the verifier behind `piigate audit verify`.
"""
