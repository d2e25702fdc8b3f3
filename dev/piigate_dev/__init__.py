"""piigate-dev: development stand-ins for the systems piigate sits between.

Never part of a production install (it is its own distribution, `piigate-dev`):

- `localvault`: a local vault speaking Piiano Vault's REST API.
- `devissuer`: an OAuth 2.0 / OIDC issuer that mints user tokens on request, and the
  lazy-migration flow that moves a user's PII into the vault.
- `demo`: `make demo`, piigate end to end on these stand-ins.
- `cli`: the `piigate-dev` command.
"""

__version__ = "0.1.0"
