"""piigate_dev.localvault.schema and .tokens: definitions, value types, tokenize bodies."""

from __future__ import annotations

from typing import Any

import pytest

from piigate_dev.localvault.errors import (
    PropertyMissing,
    PropertyUnknown,
    RequestInvalid,
    TokenIdTaken,
    ValueInvalid,
)
from piigate_dev.localvault.schema import check_values, parse_collection
from piigate_dev.localvault.tokens import build_token, parse_tokenize_body

DEFINITION: dict[str, Any] = {
    "name": "users",
    "type": "PERSONS",
    "properties": [
        {"name": "ssn", "data_type_name": "SSN", "is_unique": True},
        {"name": "email", "data_type_name": "EMAIL", "is_nullable": True},
        {"name": "age", "data_type_name": "INTEGER", "is_nullable": True},
        {"name": "active", "data_type_name": "BOOLEAN", "is_nullable": True},
        {"name": "born", "data_type_name": "DATE_OF_BIRTH", "is_nullable": True},
    ],
}


def users() -> Any:
    spec, problems = parse_collection(DEFINITION)
    assert spec is not None, problems
    return spec


def test_parse_collection_defaults() -> None:
    spec = users()
    ssn = spec.property("ssn")
    assert ssn is not None
    assert ssn.is_unique
    assert ssn.is_encrypted
    assert not ssn.is_nullable
    assert spec.to_json()["properties"][0]["data_type_name"] == "SSN"
    assert parse_collection(spec.to_json())[0] == spec  # what GET answers can be posted back


def test_parse_collection_reports_every_problem_with_its_path() -> None:
    _, problems = parse_collection(
        {
            "name": "1bad",
            "type": "PEOPLE",
            "colour": "red",
            "properties": [
                {"name": "ssn", "data_type_name": "SOCIAL"},
                {"name": "ssn", "data_type_name": "SSN", "is_unique": "yes"},
            ],
        },
        "collections[0]",
    )
    paths = {path for path, _ in problems}
    assert paths == {
        "collections[0].name",
        "collections[0].type",
        "collections[0].colour",
        "collections[0].properties[0].data_type_name",
        "collections[0].properties[1].is_unique",
    }


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (
            {
                "ssn": "123-12-1234",
                "email": "a@b.co",
                "age": 3,
                "active": True,
                "born": "2000-01-31",
            },
            None,
        ),
        ({"ssn": "123121234"}, None),
        ({"ssn": "12-12-1234"}, ValueInvalid),
        ({"ssn": "123-12-1234", "email": "nope"}, ValueInvalid),
        ({"ssn": "123-12-1234", "age": "3"}, ValueInvalid),
        ({"ssn": "123-12-1234", "age": True}, ValueInvalid),
        ({"ssn": "123-12-1234", "active": 1}, ValueInvalid),
        ({"ssn": "123-12-1234", "born": "2000-02-30"}, ValueInvalid),
        ({"ssn": None}, ValueInvalid),
        ({"ssn": "123-12-1234", "shoe": 4}, PropertyUnknown),
        ({"email": "a@b.co"}, PropertyMissing),
    ],
)
def test_check_values(values: dict[str, object], error: type[Exception] | None) -> None:
    if error is None:
        check_values(users(), values, complete=True)
        return
    with pytest.raises(error) as caught:
        check_values(users(), values, complete=True)
    # The error names properties and data types, never a value.
    names = {"ssn", "email", "age", "active", "born", "shoe", "SSN", "EMAIL", "INTEGER",
             "BOOLEAN", "DATE_OF_BIRTH"}  # fmt: skip
    assert set(caught.value.context.values()) <= names


def test_tokenize_body() -> None:
    items = parse_tokenize_body(
        [
            {"type": "pointer", "object": {"id": "o1"}, "props": ["ssn"], "tags": ["t"]},
            {
                "type": "deterministic",
                "object": {"fields": {"ssn": "123-12-1234"}},
                "token_id": "a_b-1",
            },
        ],
        users(),
    )
    assert items[0].object_id == "o1"
    assert items[0].tags == ("t",)
    assert items[1].fields == {"ssn": "123-12-1234"}
    assert items[1].token_id == "a_b-1"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, RequestInvalid),
        ([], RequestInvalid),
        ([{"type": "magic", "object": {"id": "o"}}], RequestInvalid),
        ([{"type": "pci", "object": {}}], RequestInvalid),
        ([{"type": "pci", "object": {"id": "o", "fields": {}}}], RequestInvalid),
        ([{"type": "pointer", "object": {"fields": {"ssn": "123-12-1234"}}}], RequestInvalid),
        ([{"type": "pci", "object": {"fields": {"ssn": "bad"}}}], ValueInvalid),
        ([{"type": "pci", "object": {"id": "o"}, "props": ["shoe"]}], PropertyUnknown),
        (
            [{"type": "pci", "object": {"id": "o"}, "tags": [str(i) for i in range(11)]}],
            RequestInvalid,
        ),
        ([{"type": "pci", "object": {"id": "o"}, "token_id": "has space"}], RequestInvalid),
        ([{"type": "pci", "object": {"id": "o"}, "token_id": "x" * 129}], RequestInvalid),
        ([{"type": "pci", "object": {"id": "o"}, "store_object": True}], RequestInvalid),
        ([{"type": "pci", "object": {"id": "o"}, "token_id": "t"}] * 2, TokenIdTaken),
    ],
)
def test_tokenize_body_errors(body: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_tokenize_body(body, users())


def test_build_token() -> None:
    item = parse_tokenize_body(
        [{"type": "deterministic", "object": {"id": "o1"}, "props": ["ssn"]}], users()
    )[0]
    token = build_token(
        item,
        {"ssn": "123-12-1234", "email": "a@b.co"},
        now=10.0,
        expires_at=70.0,
        new_id=lambda: "random",
        deterministic_id=lambda fields: f"det:{sorted(fields)}",
    )
    assert token.token_id == "det:['ssn']"
    assert token.fields == {"ssn": "123-12-1234"}  # only the requested props are kept
    assert (token.created_at, token.expires_at, token.object_id) == (10.0, 70.0, "o1")
