"""The audit trail: stage 9 of the path; one event for every decision, allowed or not.

- `event`: the typed event and its canonical JSON, with no PII in any field.
- `chain`: the hash-chained JSON Lines format, its writer and its verifier.
"""
