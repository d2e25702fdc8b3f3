"""Piiano Vault's built-in `mask` transformation, as a pure function.

`mask(data_type_name, value)` gives what Piiano answers for `<prop>.mask`. The outputs
follow the documented examples (shared/reference/piiano-vault-api.md):

    SSN              123-12-1234        ***-**-1234
    EMAIL            john@gmail.com     j***@gmail.com
    PHONE_NUMBER     +972-54-1234567    *********4567
    CC_NUMBER        4580458045804580   ************4580
    NAME             John Doe           J*** D**
    DATE[_OF_BIRTH]  2024-11-08         2024-**-**
    ZIP_CODE_US      12345              123**
    BAN              ...7917            *******7917
    STRING           word word          **** ****

Rules beyond the examples (our reading, applied consistently): identifiers that end in
"last four" (PHONE_NUMBER, CC_NUMBER, BAN, US_BANK_ACCOUNT_NUMBER) are first normalized
by dropping separators, then all but the last four characters become `*`; CC_HOLDER_NAME
masks like NAME. The local vault and the gateway share this module, so both mask alike.
Nothing here logs or echoes a value: errors name the data type only.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MASKABLE_TYPES", "UnsupportedTransformation", "mask", "supports_mask"]

_WORD = re.compile(r"\S+")
_NON_SPACE = re.compile(r"\S")
_DIGIT = re.compile(r"\d")
_PHONE_SEPARATORS = re.compile(r"[\s().\-]")


class UnsupportedTransformation(ValueError):
    """`mask` is not defined for this data type."""

    def __init__(self, data_type_name: str) -> None:
        super().__init__(f"mask is not supported for data type {data_type_name}")
        self.data_type_name = data_type_name


def _keep_last_four(text: str) -> str:
    # Short inputs are masked entirely: showing "the last four" of a 3-character value
    # would show all of it.
    if len(text) <= 4:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]


def _mask_ssn(text: str) -> str:
    digits = "".join(ch for ch in text if ch.isdigit())
    return "***-**-" + (digits[-4:] if len(digits) >= 4 else "****")


def _mask_email(text: str) -> str:
    local, at, domain = text.rpartition("@")
    if not at:
        return _mask_string(text)
    return f"{local[:1]}***@{domain}"


def _mask_phone(text: str) -> str:
    # Normalize first (Piiano stores E.164-like numbers), keeping a leading '+'.
    return _keep_last_four(_PHONE_SEPARATORS.sub("", text))


def _mask_card(text: str) -> str:
    return _keep_last_four("".join(ch for ch in text if ch.isdigit()))


def _mask_account(text: str) -> str:
    return _keep_last_four("".join(text.split()))


def _mask_name(text: str) -> str:
    return _WORD.sub(lambda m: m.group(0)[0] + "*" * (len(m.group(0)) - 1), text)


def _mask_date(text: str) -> str:
    # Keep the year (YYYY-MM-DD → YYYY-**-**); digits after it are hidden.
    return text[:4] + _DIGIT.sub("*", text[4:])


def _mask_zip(text: str) -> str:
    return text[:3] + _DIGIT.sub("*", text[3:])


def _mask_string(text: str) -> str:
    return _NON_SPACE.sub("*", text)


_MASKERS: dict[str, Callable[[str], str]] = {
    "SSN": _mask_ssn,
    "EMAIL": _mask_email,
    "PHONE_NUMBER": _mask_phone,
    "CC_NUMBER": _mask_card,
    "BAN": _mask_account,
    "US_BANK_ACCOUNT_NUMBER": _mask_account,
    "NAME": _mask_name,
    "CC_HOLDER_NAME": _mask_name,
    "DATE_OF_BIRTH": _mask_date,
    "DATE": _mask_date,
    "ZIP_CODE_US": _mask_zip,
    "STRING": _mask_string,
}

MASKABLE_TYPES: frozenset[str] = frozenset(_MASKERS)
"""Data types for which `mask` is defined."""


def supports_mask(data_type_name: str) -> bool:
    """True when `mask(data_type_name, ...)` is defined."""
    return data_type_name in _MASKERS


def mask(data_type_name: str, value: object) -> str:
    """Mask `value` the way Piiano's `mask` transformation does for `data_type_name`.

    Raises UnsupportedTransformation for a type without a mask, TypeError for a value
    that is neither text nor an integer (the message never contains the value).
    """
    masker = _MASKERS.get(data_type_name)
    if masker is None:
        raise UnsupportedTransformation(data_type_name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"mask needs a text value for data type {data_type_name}")
    return masker(str(value))
