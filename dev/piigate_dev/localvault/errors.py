"""The local vault's one error tree, in Piiano Vault's wire shape.

Every expected failure is a `VaultError` carrying an HTTP status, a Piiano-style
`error_code` and a fixed message; `context` holds names (properties, parameters, data
types), never property values. The HTTP middleware (`piigate_dev.localvault.app`) is the only
place that turns them into responses; anything else becomes a bare PV1000.

    VaultError
    ├── 400 PV1001 ReasonMissing           PV1002 ReasonInvalid     PV1003 AdhocReasonMissing
    ├── 400 PV1012 RequestInvalid          (malformed JSON, bad parameter, body shape)
    ├── 400 PV3002 PropertyUnknown         PV3003 ValueInvalid      PV3005 TransformationUnsupported
    ├── 400 PV3006 PropertyMissing         PV3008 TokenNotDetokenizable
    ├── 401 PV1005 KeyMissing              PV1006 KeyInvalid
    ├── 403 PV1007 NotPermitted
    ├── 404 PV1004 CollectionNotFound      PV3004 ObjectNotFound    PV1008 RouteNotFound
    ├── 405 PV1011 MethodNotAllowed
    ├── 409 PV3001 CollectionExists        PV3007 UniqueViolation   PV3009 TokenIdTaken
    └── 413 PV1013 BodyTooLarge

PV1001, PV1002, PV1004 and the PV1005–PV1007 range follow the reference; the other codes
are this stand-in's own choices (Piiano's exact numbers for them are not documented there),
so clients should match on status first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class VaultError(Exception):
    """An expected failure with an HTTP status and a Piiano error code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "PV1000"
    message: ClassVar[str] = "internal error"

    def __init__(self, **context: str) -> None:
        super().__init__(self.code)
        self.context: Mapping[str, str] = dict(context)

    def body(self) -> dict[str, Any]:
        """The JSON answer body: `{"error_code", "message", "context"}`."""
        return {"error_code": self.code, "message": self.message, "context": dict(self.context)}


class ReasonMissing(VaultError):
    status, code, message = 400, "PV1001", "the reason query parameter is required"


class ReasonInvalid(VaultError):
    status, code, message = 400, "PV1002", "the reason is not one of the allowed reasons"


class AdhocReasonMissing(VaultError):
    status, code, message = 400, "PV1003", "reason Other requires adhoc_reason"


class RequestInvalid(VaultError):
    status, code, message = 400, "PV1012", "the request does not match the API specification"


class PropertyUnknown(VaultError):
    status, code, message = 400, "PV3002", "the property does not exist in the collection"


class ValueInvalid(VaultError):
    status, code, message = 400, "PV3003", "the value does not match the property's data type"


class TransformationUnsupported(VaultError):
    status, code, message = 400, "PV3005", "the transformation is not supported for this property"


class PropertyMissing(VaultError):
    status, code, message = 400, "PV3006", "a required (non-nullable) property is missing"


class TokenNotDetokenizable(VaultError):
    status, code, message = 400, "PV3008", "pci_oneway tokens cannot be detokenized"


class KeyMissing(VaultError):
    status, code, message = 401, "PV1005", "an Authorization: Bearer API key is required"


class KeyInvalid(VaultError):
    status, code, message = 401, "PV1006", "the API key is invalid"


class NotPermitted(VaultError):
    status, code, message = 403, "PV1007", "the API key is not permitted to perform this operation"


class CollectionNotFound(VaultError):
    status, code, message = 404, "PV1004", "the collection does not exist"


class ObjectNotFound(VaultError):
    status, code, message = 404, "PV3004", "the object does not exist"


class RouteNotFound(VaultError):
    status, code, message = 404, "PV1008", "no such endpoint"


class MethodNotAllowed(VaultError):
    status, code, message = 405, "PV1011", "method not allowed on this endpoint"


class CollectionExists(VaultError):
    status, code, message = 409, "PV3001", "a collection with this name already exists"


class UniqueViolation(VaultError):
    status, code, message = 409, "PV3007", "a unique property already holds this value"


class TokenIdTaken(VaultError):
    status, code, message = 409, "PV3009", "a token with this token_id already exists"


class BodyTooLarge(VaultError):
    status, code, message = 413, "PV1013", "the request body is too large"


class InternalError(VaultError):
    """The answer for anything unexpected: no detail leaves the process."""


class StartupError(Exception):
    """Something that stops the vault from starting (bad config, wrong data key).

    Not a wire error: the command line prints it and exits with status 2.
    """
