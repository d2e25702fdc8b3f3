"""What a read answers: requested properties, transformed where asked (pure).

`props=ssn,email.mask` narrows an answer to those properties, and a transformed one is
answered under its full name (`{"email.mask": "j***@gmail.com"}`), on the objects API and
on detokenize alike, so the raw value never leaves the vault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from piigate_dev.localvault.errors import PropertyUnknown, TransformationUnsupported
from piigate_dev.localvault.masking import mask
from piigate_dev.localvault.params import PropRef
from piigate_dev.localvault.schema import CollectionSpec


def check_refs(collection: CollectionSpec, refs: Sequence[PropRef]) -> None:
    """Raise unless every ref names a property and a transformation it supports."""
    for ref in refs:
        prop = collection.property(ref.name)
        if prop is None:
            raise PropertyUnknown(property=ref.name)
        if ref.transformation is not None and not prop.supports(ref.transformation):
            raise TransformationUnsupported(
                property=ref.name,
                transformation=ref.transformation,
                data_type=prop.data_type_name,
            )


def shape(
    collection: CollectionSpec, values: Mapping[str, object], refs: Sequence[PropRef]
) -> dict[str, object]:
    """`values` narrowed to `refs` (all of them when `refs` is empty), keys carrying the
    transformation. Refs must have passed `check_refs`; absent properties are left out."""
    if not refs:
        return dict(values)
    answer: dict[str, object] = {}
    for ref in refs:
        if ref.name not in values:
            continue
        value = values[ref.name]
        if ref.transformation is not None and value is not None:
            prop = collection.property(ref.name)
            assert prop is not None  # guaranteed by check_refs
            value = mask(prop.data_type_name, value)
        answer[ref.key] = value
    return answer
