"""Which customers to look up: one named by flags, a CSV with `issuer` and `subject`
columns, or one subject per line (all at one issuer).

Pure: text in, `Customer` values out. A complaint names the line and the column, never
the value: a customer id is personal data, and it would land in a terminal's scrollback.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_FIELD_CHARS = 1024  # an issuer name or a `sub`; longer is a pasted document, not an id


class InputError(ValueError):
    """The customer list cannot be read; the message names a line, never a value."""


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer as their identity provider knows them: piigate's configured issuer
    name and the `sub` it issues for them."""

    issuer: str
    subject: str


def one(issuer: str, subject: str) -> Customer:
    """The customer named by `--issuer` and `--subject`."""
    return Customer(_value(issuer, "--issuer"), _value(subject, "--subject"))


def from_csv(text: str) -> list[Customer]:
    """Rows of a CSV whose header names `issuer` and `subject` (any case, any order,
    other columns ignored, so a ticket system's export works as it is)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("the CSV is empty: it needs a header with issuer and subject") from None
    except csv.Error as exc:
        raise InputError(f"line 1 is not CSV ({exc})") from None
    columns = [name.strip().lower() for name in header]
    missing = [name for name in ("issuer", "subject") if name not in columns]
    if missing:
        raise InputError(f"the CSV header has no {' or '.join(missing)} column")
    at_issuer, at_subject = columns.index("issuer"), columns.index("subject")
    customers = []
    for line, row in _rows(reader):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(at_issuer, at_subject):
            raise InputError(f"line {line} has {len(row)} columns, fewer than the header")
        customers.append(Customer(_value(row[at_issuer], f"line {line}, issuer"),
                                  _value(row[at_subject], f"line {line}, subject")))
    return _not_empty(customers)


def from_lines(lines: Iterable[str], issuer: str) -> list[Customer]:
    """One subject per line, all at `issuer`; blank lines and `#` comments skipped."""
    at = _value(issuer, "--issuer")
    customers = [
        Customer(at, _value(text, f"line {number}"))
        for number, raw in enumerate(lines, start=1)
        if (text := raw.strip()) and not text.startswith("#")
    ]
    return _not_empty(customers)


def _rows(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """Each row with the line it ends on (`csv.reader.line_num`: a quoted field may span
    lines)."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"line {reader.line_num} is not CSV ({exc})") from None
        yield reader.line_num, row


def _value(raw: str, where: str) -> str:
    value = raw.strip()
    if not value:
        raise InputError(f"{where} is empty")
    if len(value) > MAX_FIELD_CHARS or not value.isprintable():
        raise InputError(f"{where} is not an identifier (unprintable, or over "
                         f"{MAX_FIELD_CHARS} characters)")
    return value


def _not_empty(customers: list[Customer]) -> list[Customer]:
    if not customers:
        raise InputError("no customers to look up")
    return customers
