"""The development token issuer: an OAuth 2.0 / OIDC stand-in for Auth0 or Keycloak.

On a machine with no identity-provider account, piigate verifies tokens from this issuer
exactly as it verifies a real one: discovery document, JWKS with `Cache-Control`, signed
`at+jwt` access tokens. It also mints end-user tokens as if the user had just logged in,
and runs the lazy-migration flow (PII into the vault, only the vault token in the claim).

One module per stage, in the order a request travels:

    config     the validated, frozen `IssuerConfig` (read once, from TOML)
    keys       signing keys, their JWKs and the rotation state machine
    oauth      client-credentials request parsing and the grant decision (RFC 6749 §4.4)
    assertion  private_key_jwt client assertions (RFC 7523 §3) and their replay memory
    claims     pure token building: claims and header from inputs and a clock reading
    service    `DevIssuer`: config + keys + clock -> signed tokens (the in-process signer)
    opaque     opaque tokens: the claims kept server-side, introspection answers, revocation
    api        the aiohttp routes and `create_issuer_app`
    remote     a client of a running issuer's `/dev/users/token`
    migration  `migrate_user`: vault object -> vault token -> user access token

This is development tooling. Its user-token endpoint hands out tokens for any subject, so
the CLI refuses non-loopback addresses unless `--allow-remote` is given, and the app
refuses `/dev/*` calls from non-loopback peers unless built with `allow_remote=True`.

Import from the submodules (`piigate_dev.devissuer.api.create_issuer_app`, ...): this package
file stays import-free so that building the `piigate` parser does not load aiohttp or
cryptography.
"""
