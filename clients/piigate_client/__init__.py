"""Python client for piigate's `piigate.v1.DetokenizationService`.

    from piigate_client import DetokenizationClient, ClientCredentials, errors

    credential = ClientCredentials(token_url, client_id, client_secret, audience="piigate")
    with DetokenizationClient("piigate.internal:50051", credential) as client:
        result = client.detokenize(user_access_token, fields=["ssn"])
        print(result["ssn"].value, result["ssn"].disclosure)   # ***-**-1234 masked

Importable without the server package. `PrivateKeyJwt` (RFC 7523 client assertions)
needs the `piigate-client[jwt]` extra (PyJWT and cryptography).
"""

from piigate_client.client import (
    AsyncDetokenizationClient,
    DetokenizationClient,
    Detokenized,
    Field,
    SubjectRef,
)
from piigate_client.client_auth import ClientSecretBasic, ClientSecretPost, PrivateKeyJwt
from piigate_client.errors import PiigateError
from piigate_client.oauth import ClientCredentials, TokenEndpointError

__all__ = [
    "AsyncDetokenizationClient",
    "ClientCredentials",
    "ClientSecretBasic",
    "ClientSecretPost",
    "DetokenizationClient",
    "Detokenized",
    "Field",
    "PiigateError",
    "PrivateKeyJwt",
    "SubjectRef",
    "TokenEndpointError",
]
