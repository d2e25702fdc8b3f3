"""The vault: stage 7 of the path, the one place piigate reads PII.

- `piiano`: facts of Piiano Vault's API (paths, reasons, limits).
- `binding`: the tags that bind a vault token to its person: the user's issuer and
  subject, and a FHIR server's Patient id.
- `client`: the HTTP client for Piiano's detokenize, every failure a typed error.
- `http1`: its HTTP/1.1 transport: the answer reader (llhttp) and the connection pool.
- `tls`: the vault's TLS client context (private CA, client certificate), reloaded.
- `coalescing`: identical concurrent reads share one vault call.
- `reads`: one call's items' reads (by token id, or by tag alone), sent together.
"""
