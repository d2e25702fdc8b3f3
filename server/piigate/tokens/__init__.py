"""Access tokens: JWTs verified against their issuer's published keys (stages 1 and 3), and
opaque subject tokens checked by their issuer's introspection endpoint (stage 3).

In the order a token is handled:

- `jws`: the pure structure and signature rules (steps 1-7: parse, header, key, signature).
- `verification`: the issuer's policy and the pure claim rules (steps 8-13: issuer, type,
  claims, times, audience); `verify` runs all thirteen.
- `keys`: JWKS documents parsed into usable public keys, pure.
- `jwks`: the issuer's key set, fetched and cached (stale keys answer while a refresh runs).
- `fetch`: the bounded HTTP GET of an issuer's documents, the I/O edge.
- `discovery`: the key set's location from OpenID discovery, when not configured.
- `introspection`: opaque tokens by RFC 7662 introspection: the answer's rules (pure), the
  cache, the POST; routing a token to its opaque issuer.
- `verifier`: the async glue: pick the issuer, get its keys, verify, cache the result.
- `claims`: reading claims whose name and shape differ by identity provider.
"""
