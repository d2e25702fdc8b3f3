"""piigate_dev.localvault.sealing and .store: AES-GCM at rest, AAD binding, key check."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from piigate_dev.localvault.database import WrongDataKey
from piigate_dev.localvault.errors import CollectionExists, TokenIdTaken, UniqueViolation
from piigate_dev.localvault.schema import CollectionSpec, PropertySpec
from piigate_dev.localvault.sealing import NONCE_BYTES, SealBroken, Sealer
from piigate_dev.localvault.store import VaultStore
from piigate_dev.localvault.tokens import Token, TokenSelector

USERS = CollectionSpec(
    "users",
    "PERSONS",
    (
        PropertySpec("user_id", "STRING", is_unique=True),
        PropertySpec("ssn", "SSN"),
        PropertySpec("email", "EMAIL", is_nullable=True),
    ),
)


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(os.urandom(32))


@pytest.fixture
def store(sealer: Sealer) -> VaultStore:
    opened = VaultStore.open(":memory:", sealer)
    opened.create_collection(USERS)
    return opened


def test_seal_roundtrip_keeps_json_types(sealer: Sealer) -> None:
    for value in ("123-12-1234", 42, True, None, {"a": [1, 2]}):
        assert (
            sealer.unseal("users", "object/1", "p", sealer.seal("users", "object/1", "p", value))
            == value
        )


def test_seal_uses_a_fresh_nonce_and_hides_the_value(sealer: Sealer) -> None:
    first = sealer.seal("users", "object/1", "ssn", "123-12-1234")
    second = sealer.seal("users", "object/1", "ssn", "123-12-1234")
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert first != second
    assert b"123-12-1234" not in first


@pytest.mark.parametrize(
    "place",
    [("orders", "object/1", "ssn"), ("users", "object/2", "ssn"), ("users", "object/1", "email")],
)
def test_ciphertext_is_bound_to_its_place(sealer: Sealer, place: tuple[str, str, str]) -> None:
    sealed = sealer.seal("users", "object/1", "ssn", "123-12-1234")
    with pytest.raises(SealBroken):
        sealer.unseal(*place, sealed)


def test_other_key_cannot_open(sealer: Sealer) -> None:
    sealed = sealer.seal("users", "object/1", "ssn", "123-12-1234")
    with pytest.raises(SealBroken):
        Sealer(os.urandom(32)).unseal("users", "object/1", "ssn", sealed)


def test_sealer_needs_a_32_byte_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(b"short")


def test_deterministic_ids(sealer: Sealer) -> None:
    same = sealer.deterministic_token_id("users", {"ssn": "123-12-1234"})
    assert same == sealer.deterministic_token_id("users", {"ssn": "123-12-1234"})
    assert same != sealer.deterministic_token_id("users", {"ssn": "123-12-1235"})
    assert same != sealer.deterministic_token_id("orders", {"ssn": "123-12-1234"})
    assert same != Sealer(os.urandom(32)).deterministic_token_id("users", {"ssn": "123-12-1234"})


def test_wrong_key_is_refused_for_an_existing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "vault.db")
    key = os.urandom(32)
    VaultStore.open(path, Sealer(key)).close()
    with pytest.raises(WrongDataKey):
        VaultStore.open(path, Sealer(os.urandom(32)))
    VaultStore.open(path, Sealer(key)).close()  # the right key still opens it


def test_swapped_rows_do_not_decrypt(tmp_path: Path, sealer: Sealer) -> None:
    path = str(tmp_path / "vault.db")
    store = VaultStore.open(path, sealer)
    store.create_collection(USERS)
    alice = store.add_object(USERS, {"user_id": "a", "ssn": "111-11-1111"}, 0.0)
    bob = store.add_object(USERS, {"user_id": "b", "ssn": "222-22-2222"}, 0.0)
    store.close()
    db = sqlite3.connect(path)
    (bob_ssn,) = db.execute(
        "SELECT sealed FROM sealed_values WHERE owner = ? AND prop = 'ssn'", (f"object/{bob}",)
    ).fetchone()
    db.execute(
        "UPDATE sealed_values SET sealed = ? WHERE owner = ? AND prop = 'ssn'",
        (bob_ssn, f"object/{alice}"),
    )
    db.commit()
    db.close()
    store = VaultStore.open(path, sealer)
    with pytest.raises(SealBroken):
        store.objects(USERS, [alice])
    store.close()


def test_objects_roundtrip_and_unique(store: VaultStore) -> None:
    object_id = store.add_object(USERS, {"user_id": "u1", "ssn": "123-12-1234"}, 0.0)
    assert store.objects(USERS, [object_id, "missing"]) == {
        object_id: {"user_id": "u1", "ssn": "123-12-1234", "email": None}
    }
    with pytest.raises(UniqueViolation):
        store.add_object(USERS, {"user_id": "u1", "ssn": "999-99-9999"}, 0.0)
    with pytest.raises(CollectionExists):
        store.create_collection(USERS)


def test_token_selection_expiry_and_rotation(store: VaultStore) -> None:
    object_id = store.add_object(USERS, {"user_id": "u1", "ssn": "123-12-1234"}, 0.0)
    store.add_tokens(
        "users",
        [
            Token("p", "pointer", object_id, ("ssn",), ("sub:1", "x"), 1.0, None),
            Token("s", "pci", None, ("ssn",), ("sub:1",), 2.0, 100.0, {"ssn": "555-55-5555"}),
        ],
        now=1.0,
    )
    found = store.find_tokens("users", TokenSelector(tags=("sub:1",)), now=50.0)
    assert [token.token_id for token in found] == ["p", "s"]
    both_tags = TokenSelector(token_ids=("s", "p"), tags=("sub:1", "x"))
    assert [t.token_id for t in store.find_tokens("users", both_tags, now=50.0)] == ["p"]
    assert [t.token_id for t in store.find_tokens("users", TokenSelector(("s", "p")), 100.0)] == [
        "p"
    ]
    fields = store.token_fields("users", found)
    assert fields == {"p": {"ssn": "123-12-1234"}, "s": {"ssn": "555-55-5555"}}
    with pytest.raises(TokenIdTaken):
        store.add_tokens("users", [Token("p", "randomized", None, (), (), 3.0, None, {})], now=3.0)
    renamed = store.rotate_tokens("users", found)
    assert set(renamed) == {"p", "s"}
    assert store.find_tokens("users", TokenSelector(("p", "s")), now=50.0) == []
    rotated = store.find_tokens("users", TokenSelector(tuple(renamed.values())), now=50.0)
    assert store.token_fields("users", rotated) == {
        renamed["p"]: {"ssn": "123-12-1234"},
        renamed["s"]: {"ssn": "555-55-5555"},
    }
