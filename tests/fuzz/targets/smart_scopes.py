"""policy.smart_scopes on hostile scope strings (they come from tokens and the config).

Input: UTF-8 text (invalid bytes replaced), one scope per line: the first is the required
scope, the others the granted ones.

Documented errors: `ScopeSyntaxError`, only from `satisfies`/`missing_scopes` and only
for a required scope `check_required` calls malformed. Oracles: a parsed scope covers
itself; granting more never loses a scope; a query only narrows a grant; `missing_scopes`
agrees with `satisfies`.
"""

from __future__ import annotations

from piigate.policy.smart_scopes import (
    ScopeSyntaxError,
    check_required,
    missing_scopes,
    parse_scope,
    satisfies,
)
from tests.fuzz.targets import Finding, expand

MAX_SCOPES = 64


def fuzz(data: bytes) -> None:
    lines = expand(data).decode("utf-8", "replace").split("\n")[:MAX_SCOPES]
    required, granted = lines[0], lines[1:]
    for text in lines:
        scope = parse_scope(text)
        if scope is not None and not (scope.covers(scope) and satisfies([text], text)):
            raise Finding(f"{text!r} does not cover itself")
    malformed = bool(check_required([required]))
    try:
        verdict = satisfies(granted, required)
    except ScopeSyntaxError:
        if not malformed:
            raise Finding(f"{required!r} refused but check_required accepts it") from None
        return
    if malformed:
        raise Finding(f"{required!r} is malformed but satisfies did not refuse it")
    if (missing_scopes(granted, [required]) == ()) != verdict:
        raise Finding("missing_scopes and satisfies disagree")
    if verdict and not satisfies([*granted, "openid", "patient/*.cruds"], required):
        raise Finding("granting more lost a scope")
    for text in granted:
        grant, wider = parse_scope(text), parse_scope(text.partition("?")[0])
        wanted = parse_scope(required)
        if grant and wider and wanted and grant.covers(wanted) and not wider.covers(wanted):
            raise Finding(f"dropping the query of {text!r} narrowed it")
