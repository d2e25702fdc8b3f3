"""Collections, properties and data types: parsing and value validation (pure).

A collection definition has the same shape in the control API's JSON body and in the
config file's `[[collections]]` tables, so one parser serves both; it reports every
problem with its path (`properties[1].data_type_name`) and never looks at a PII value.
Validators check a value's shape only (an SSN is `ddd-dd-dddd`, a DATE parses, ...),
and their failures name the property and type, not the value.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from piigate_dev.localvault.errors import PropertyMissing, PropertyUnknown, ValueInvalid
from piigate_dev.localvault.masking import supports_mask

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,127}$")
COLLECTION_TYPES = frozenset({"PERSONS", "DATA"})


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _matches(pattern: str) -> Callable[[object], bool]:
    compiled = re.compile(pattern)
    return lambda value: isinstance(value, str) and compiled.fullmatch(value) is not None


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_double(value: object) -> bool:
    # A JSON integer is an exact Python int of any size; one beyond the largest double
    # (about 1.8e308) is not a DOUBLE, and math.isfinite would raise OverflowError on it.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 10:
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 10:
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _is_card(value: object) -> bool:
    if not isinstance(value, str):
        return False
    digits = value.replace(" ", "").replace("-", "")
    return digits.isdigit() and 12 <= len(digits) <= 19


# data type -> validator. Text types with no fixed shape only require a string.
VALIDATORS: Mapping[str, Callable[[object], bool]] = {
    "STRING": _is_text,
    "LONG_TEXT": _is_text,
    "JSON": lambda value: True,
    "INTEGER": _is_integer,
    "BOOLEAN": lambda value: isinstance(value, bool),
    "DOUBLE": _is_double,
    "BLOB": _matches(r"[A-Za-z0-9+/=\s]*"),
    "EMAIL": _matches(r"[^@\s]+@[^@\s]+\.[^@\s]+"),
    "PHONE_NUMBER": _matches(r"\+?[0-9][0-9 ().\-]{5,30}"),
    "ZIP_CODE_US": _matches(r"\d{5}(-\d{4})?"),
    "DATE": _is_date,
    "DATE_OF_BIRTH": _is_date,
    "TIMESTAMP": _is_timestamp,
    "NAME": _is_text,
    "GENDER": _is_text,
    "ADDRESS": _is_text,
    "SSN": _matches(r"\d{3}-?\d{2}-?\d{4}"),
    "BAN": _matches(r"[A-Za-z0-9 ]{4,34}"),
    "CC_NUMBER": _is_card,
    "CC_HOLDER_NAME": _is_text,
    "CC_EXPIRATION_STRING": _matches(r"(0[1-9]|1[0-2])/\d{2}(\d{2})?"),
    "CC_CVV": _matches(r"\d{3,4}"),
    "US_BANK_ROUTING": _matches(r"\d{9}"),
    "US_BANK_ACCOUNT_NUMBER": _matches(r"\d{4,17}"),
    "TENANT_ID": _is_text,
}
DATA_TYPES = frozenset(VALIDATORS)


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One typed property of a collection."""

    name: str
    data_type_name: str
    description: str = ""
    is_unique: bool = False
    is_nullable: bool = False
    is_encrypted: bool = True
    is_index: bool = False

    def accepts(self, value: object) -> bool:
        """True when `value` is valid for this property (None only if nullable)."""
        if value is None:
            return self.is_nullable
        return VALIDATORS[self.data_type_name](value)

    def supports(self, transformation: str) -> bool:
        """True when `<name>.<transformation>` can be answered."""
        return transformation == "mask" and supports_mask(self.data_type_name)

    def to_json(self) -> dict[str, Any]:
        """The property as the control API answers it."""
        return {
            "name": self.name,
            "data_type_name": self.data_type_name,
            "description": self.description,
            "is_unique": self.is_unique,
            "is_nullable": self.is_nullable,
            "is_encrypted": self.is_encrypted,
            "is_index": self.is_index,
        }


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """A collection: a name, PERSONS or DATA, and its properties in order."""

    name: str
    type: str
    properties: tuple[PropertySpec, ...]

    def property(self, name: str) -> PropertySpec | None:
        """The property called `name`, or None."""
        for prop in self.properties:
            if prop.name == name:
                return prop
        return None

    def to_json(self) -> dict[str, Any]:
        """The collection as the control API answers it."""
        return {
            "name": self.name,
            "type": self.type,
            "properties": [prop.to_json() for prop in self.properties],
        }


Problem = tuple[str, str]
"""(key path, message): one thing wrong in a definition."""

_PROPERTY_FLAGS = ("is_unique", "is_nullable", "is_encrypted", "is_index")
# Keys a Piiano client may echo back from a GET; accepted and ignored.
_IGNORED_PROPERTY_KEYS = frozenset(
    {"is_builtin", "is_readonly", "pii_type_name", "creation_time", "modification_time"}
)
_IGNORED_COLLECTION_KEYS = frozenset({"creation_time", "modification_time", "id"})


def parse_collection(raw: object, path: str = "") -> tuple[CollectionSpec | None, list[Problem]]:
    """Parse a Piiano-shaped collection definition; on any problem the spec is None."""
    problems: list[Problem] = []
    prefix = f"{path}." if path else ""
    if not isinstance(raw, dict):
        return None, [(path or "<body>", "a collection must be an object")]
    for key in raw.keys() - {"name", "type", "properties"} - _IGNORED_COLLECTION_KEYS:
        problems.append((f"{prefix}{key}", "unknown key"))
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append((f"{prefix}name", "must be letters, digits and _ (starting with a letter)"))
    kind = raw.get("type", "PERSONS")
    if kind not in COLLECTION_TYPES:
        problems.append((f"{prefix}type", "must be PERSONS or DATA"))
    raw_props = raw.get("properties")
    if not isinstance(raw_props, list) or not raw_props:
        problems.append((f"{prefix}properties", "must be a non-empty list"))
        raw_props = []
    props: list[PropertySpec] = []
    for index, raw_prop in enumerate(raw_props):
        prop = _parse_property(raw_prop, f"{prefix}properties[{index}]", problems)
        if prop is None:
            continue
        if any(seen.name == prop.name for seen in props):
            problems.append((f"{prefix}properties[{index}].name", "duplicate property name"))
        props.append(prop)
    if problems:
        return None, problems
    return CollectionSpec(str(name), str(kind), tuple(props)), []


def _parse_property(raw: object, path: str, problems: list[Problem]) -> PropertySpec | None:
    if not isinstance(raw, dict):
        problems.append((path, "a property must be an object"))
        return None
    before = len(problems)
    known = {"name", "data_type_name", "description", *_PROPERTY_FLAGS}
    for key in raw.keys() - known - _IGNORED_PROPERTY_KEYS:
        problems.append((f"{path}.{key}", "unknown key"))
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append((f"{path}.name", "must be letters, digits and _ (starting with a letter)"))
    data_type = raw.get("data_type_name", raw.get("pii_type_name"))
    if data_type not in DATA_TYPES:
        problems.append((f"{path}.data_type_name", "unknown data type"))
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append((f"{path}.description", "must be a string"))
    flags: dict[str, bool] = {}
    for flag in _PROPERTY_FLAGS:
        value = raw.get(flag, flag == "is_encrypted")
        if not isinstance(value, bool):
            problems.append((f"{path}.{flag}", "must be true or false"))
        flags[flag] = bool(value)
    if len(problems) > before:
        return None
    return PropertySpec(str(name), str(data_type), str(description), **flags)


def check_values(
    collection: CollectionSpec, values: Mapping[str, object], *, complete: bool
) -> None:
    """Raise unless every value fits its property; `complete` also requires every
    non-nullable property. Errors name the property and type, never the value."""
    for name, value in values.items():
        prop = collection.property(name)
        if prop is None:
            raise PropertyUnknown(property=name)
        if not prop.accepts(value):
            raise ValueInvalid(property=name, data_type=prop.data_type_name)
    if complete:
        for prop in collection.properties:
            if prop.name not in values and not prop.is_nullable:
                raise PropertyMissing(property=prop.name)
