"""The boundary: one ErrorInfo per expected error; INTERNAL with no detail otherwise."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from piigate.errors import ScopeMissing, TokenExpired
from piigate.transport.boundary import INTERNAL, status_of


def error_info(status: grpc.Status) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    (key, value), = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    rich = status_pb2.Status.FromString(value)
    assert len(rich.details) == 1
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    return rich, info


def test_expected_error_carries_code_reason_domain_and_metadata() -> None:
    status = status_of(TokenExpired().for_role("subject"))
    rich, info = error_info(status)
    assert status.code == grpc.StatusCode.UNAUTHENTICATED
    assert rich.message == "the token was rejected"
    assert (info.domain, info.reason) == ("piigate", "TOKEN_EXPIRED")
    assert dict(info.metadata) == {"token_role": "subject"}


def test_permission_errors_share_a_generic_message() -> None:
    status = status_of(ScopeMissing({"profile": "fhir", "missing": "patient/Patient.read"}))
    rich, info = error_info(status)
    assert status.code == grpc.StatusCode.PERMISSION_DENIED
    assert rich.message == "permission denied"
    assert info.reason == "SCOPE_MISSING"


def test_unexpected_errors_become_a_bare_internal() -> None:
    rich, info = error_info(INTERNAL)
    assert INTERNAL.code == grpc.StatusCode.INTERNAL
    assert (rich.message, info.reason) == ("internal error", "INTERNAL")


def test_a_request_id_goes_into_the_error_info_and_the_trailer() -> None:
    status = status_of(ScopeMissing({"profile": "fhir"}), "ab" * 16)
    trailers = dict(status.trailing_metadata)
    rich = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    assert dict(info.metadata) == {"profile": "fhir", "request_id": "ab" * 16}
    assert trailers["piigate-request-id"] == "ab" * 16
    assert status.code == grpc.StatusCode.PERMISSION_DENIED
