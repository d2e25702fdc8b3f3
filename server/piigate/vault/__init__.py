"""The vault: stage 7 of the path, the one place piigate reads PII.

- `piiano`: facts of Piiano Vault's API (paths, reasons, limits).
- `binding`: the tag that binds a vault token to its user's issuer and subject.
- `client`: the HTTP client for Piiano's detokenize, every failure a typed error.
- `coalescing`: identical concurrent reads share one vault call.
"""
