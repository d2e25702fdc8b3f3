"""JWT access tokens: verified against their issuer's published keys (used by stages 1 and 3).

In the order a token is handled:

- `verification`: the pure rules (parse, header, issuer, time, audience, key, signature).
- `keys`: JWKS documents parsed into usable public keys, pure.
- `jwks`: the issuer's key set fetched and cached over HTTP, the I/O edge.
- `discovery`: the key set's location from OpenID discovery, when not configured.
- `verifier`: the async glue: pick the issuer, get its keys, verify, cache the result.
- `claims`: reading claims whose name and shape differ by identity provider.
"""
