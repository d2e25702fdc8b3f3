"""Outcomes as a table, JSON lines or CSV: what the profile disclosed, and nothing more.

Each disclosed field is written with its value exactly as piigate sent it and its
disclosure kind (`raw`, `masked` or `redacted`), so no reader mistakes a masked value
for the real one. Never written: the vault token id, any token, the error message text
(a failure is its code, reason and request id, which find the audit event).

The formats, one row per customer in input order:

- `jsonl`: `{"issuer", "subject", "status": "ok", "request_id", "fields": {NAME:
  {"value", "disclosure"}}}`, or `{"issuer", "subject", "status": "failed", "code",
  "reason", "request_id"}`;
- `csv`: columns `issuer, subject, status, code, reason, request_id`, then `NAME` and
  `NAME_disclosure` for each field (the `--fields` asked for, in that order, else as
  the profile listed them);
- `table` (rich): the same, one cell per field as `VALUE (KIND)`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Literal, TextIO

from piigate_client.support.lookup import Failed, Found, Outcome

Format = Literal["table", "jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("table", "jsonl", "csv")
FILE_WIDTH = 4096
CSV_COLUMNS = ("issuer", "subject", "status", "code", "reason", "request_id")


def field_names(outcomes: Sequence[Outcome], asked: Sequence[str]) -> list[str]:
    """The field columns: those asked for, then any other field disclosed, in order."""
    names = list(dict.fromkeys(asked))
    for outcome in outcomes:
        if isinstance(outcome, Found):
            names.extend(f.name for f in outcome.fields if f.name not in names)
    return names


def as_json(outcome: Outcome) -> dict[str, object]:
    """One JSON line's object."""
    row: dict[str, object] = {"issuer": outcome.customer.issuer,
                              "subject": outcome.customer.subject}
    if isinstance(outcome, Found):
        row.update(status="ok", request_id=outcome.request_id, fields={
            f.name: {"value": f.value, "disclosure": f.disclosure} for f in outcome.fields})
    else:
        row.update(status="failed", code=outcome.failure.code, reason=outcome.failure.reason,
                   request_id=outcome.failure.request_id)
    return row


def write_jsonl(outcomes: Sequence[Outcome], out: TextIO) -> None:
    for outcome in outcomes:
        out.write(json.dumps(as_json(outcome), ensure_ascii=False) + "\n")


def write_csv(outcomes: Sequence[Outcome], asked: Sequence[str], out: TextIO) -> None:
    names = field_names(outcomes, asked)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(c for n in names for c in (n, f"{n}_disclosure"))])
    for outcome in outcomes:
        writer.writerow(_csv_row(outcome, names))


def write_table(outcomes: Sequence[Outcome], asked: Sequence[str], out: TextIO) -> None:
    """A rich table; colour only when `out` is a terminal (rich decides)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    names = field_names(outcomes, asked)
    table = Table(show_lines=False)
    for column in ("issuer", "subject", *names, "status", "request id"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        # Text, not markup: a value or an id with "[...]" in it is printed as it is.
        cells = [Text(outcome.customer.issuer), Text(outcome.customer.subject)]
        if isinstance(outcome, Found):
            by_name = {f.name: f for f in outcome.fields}
            cells += [Text(f"{by_name[n].value} ({by_name[n].disclosure})") if n in by_name
                      else Text("") for n in names]
            cells += [Text("ok", style="green"), Text(outcome.request_id)]
        else:
            cells += [Text("") for _ in names]
            cells += [Text(outcome.failure.reason, style="red"),
                      Text(outcome.failure.request_id)]
        table.add_row(*cells)
    # On a terminal, its width; in a file, as wide as the rows need (never folded at 80).
    width = None if _isatty(out) else FILE_WIDTH
    Console(file=out, width=width).print(table)


def write(outcomes: Sequence[Outcome], fmt: Format, asked: Sequence[str], out: TextIO) -> None:
    """Write `outcomes` to `out` in `fmt`."""
    if fmt == "jsonl":
        write_jsonl(outcomes, out)
    elif fmt == "csv":
        write_csv(outcomes, asked, out)
    else:
        write_table(outcomes, asked, out)


def summary(outcomes: Sequence[Outcome]) -> str:
    """`N found, M failed` for standard error."""
    failed = sum(isinstance(o, Failed) for o in outcomes)
    return f"{len(outcomes) - failed} found, {failed} failed"


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except ValueError:
        return False


def _csv_row(outcome: Outcome, names: Sequence[str]) -> list[str]:
    customer = outcome.customer
    if isinstance(outcome, Failed):
        failure = outcome.failure
        return [customer.issuer, customer.subject, "failed", failure.code, failure.reason,
                failure.request_id, *("" for _ in names for _ in (0, 1))]
    by_name = {f.name: f for f in outcome.fields}
    cells = [customer.issuer, customer.subject, "ok", "", "", outcome.request_id]
    for name in names:
        found = by_name.get(name)
        cells += [found.value, found.disclosure] if found else ["", ""]
    return cells
