"""piigate: a gRPC detokenization gateway.

A caller sends a user's access token; piigate identifies the caller, verifies the token
against its issuer's published keys, reads the namespaced vault-token claim, asks the
vault to detokenize it and returns exactly the fields the caller's service profile
allows, raw, masked or redacted, auditing every disclosure.
"""

__version__ = "0.1.0"
