"""The strict JSON reader: every refusal is a ValueError, and the nesting limit is exact
and the same whatever the caller's stack depth."""

from __future__ import annotations

import inspect
import json
import sys

import pytest

from piigate import strictjson
from piigate.strictjson import MAX_DEPTH, DuplicateMember, NestingTooDeep


def nested(depth: int, inner: str = "1") -> str:
    """`depth` levels, arrays and objects alternating, around `inner`."""
    text = inner
    for level in range(depth):
        text = f"[{text}]" if level % 2 else f'{{"k": {text}}}'
    return text


@pytest.mark.parametrize("form", [str, str.encode])
def test_the_limit_is_exact(form: type) -> None:
    assert strictjson.loads(form(nested(MAX_DEPTH))) is not None
    with pytest.raises(NestingTooDeep):
        strictjson.loads(form(nested(MAX_DEPTH + 1)))


@pytest.mark.parametrize("size", [1_000, 400_000, 1024 * 1024])
def test_hostile_nesting_is_a_value_error_not_a_recursion_error(size: int) -> None:
    with pytest.raises(ValueError, match="nesting too deep"):
        strictjson.loads(b"[" * size)
    with pytest.raises(NestingTooDeep):
        strictjson.loads("{" * size)


def test_a_caller_short_of_stack_gets_nesting_too_deep_not_a_recursion_error() -> None:
    """Within the limit the parser may still run out of stack if its caller is already
    deep in its own: that is a refusal like any other."""
    frames = len(inspect.stack())
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames + 30)
    try:
        with pytest.raises(NestingTooDeep):
            strictjson.loads(nested(MAX_DEPTH // 2))
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"a": "[" * 500}),  # brackets inside strings do not nest
        json.dumps({"[" * 200: 1}),  # nor inside member names
        json.dumps(["\\", "[[[[" * 100, '"[' * 100]),  # escaped backslashes and quotes
        json.dumps([{"token_id": f"t{i}", "fields": {"a": [1]}} for i in range(200)]),
    ],
    ids=["in-value", "in-name", "escapes", "wide-batch"],
)
def test_brackets_that_do_not_nest_are_not_counted(text: str) -> None:
    assert strictjson.loads(text) == json.loads(text)
    assert strictjson.loads(text.encode()) == json.loads(text)


def test_an_escaped_quote_does_not_end_a_string() -> None:
    text = '["\\"' + "[" * (MAX_DEPTH + 1) + '"]'
    assert strictjson.loads(text) == json.loads(text)
    with pytest.raises(NestingTooDeep):
        strictjson.loads('["\\\\"' + "," + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "]")


def test_the_limit_can_be_tightened() -> None:
    assert strictjson.loads("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(NestingTooDeep):
        strictjson.loads("[[[1]]]", max_depth=2)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"a": 1, "a": 2}', DuplicateMember),
        ("[NaN]", ValueError),
        ("[Infinity]", ValueError),
        (b"\xff[]", UnicodeDecodeError),
        ("[1,]", ValueError),
    ],
)
def test_other_refusals_stay_value_errors(text: str | bytes, error: type[ValueError]) -> None:
    with pytest.raises(error):
        strictjson.loads(text)
