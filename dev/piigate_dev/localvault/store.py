"""The local vault's storage: collections, objects and tokens, every value sealed.

The SQL layout, the key check and the sealing rules live in `piigate_dev.localvault.database`.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace

from piigate_dev.localvault.database import (
    SealedDatabase,
    marks,
    object_owner,
    token_owner,
)
from piigate_dev.localvault.errors import (
    CollectionExists,
    TokenIdTaken,
    UniqueViolation,
)
from piigate_dev.localvault.schema import CollectionSpec, parse_collection
from piigate_dev.localvault.sealing import Sealer
from piigate_dev.localvault.tokens import Token, TokenSelector

_ROW_COLUMNS = "token_id, type, object_id, props, tags, created_at, expires_at"


class VaultStore(SealedDatabase):
    """Collections, objects and tokens in one SQLite database, values sealed."""

    def __init__(self, connection: sqlite3.Connection, sealer: Sealer) -> None:
        super().__init__(connection, sealer)
        self._collections: dict[str, CollectionSpec] = {}

    def _loaded(self) -> None:
        for (definition,) in self._db.execute("SELECT definition FROM collections"):
            spec, _ = parse_collection(json.loads(definition))
            if spec is not None:
                self._collections[spec.name] = spec

    # --- collections -------------------------------------------------------------------
    def collections(self) -> list[CollectionSpec]:
        """Every collection, by name."""
        return [self._collections[name] for name in sorted(self._collections)]

    def collection(self, name: str) -> CollectionSpec | None:
        """The collection called `name`, or None (served from memory)."""
        return self._collections.get(name)

    def create_collection(self, spec: CollectionSpec) -> None:
        """Add a collection; CollectionExists when the name is taken."""
        try:
            self._db.execute(
                "INSERT INTO collections VALUES (?, ?)", (spec.name, json.dumps(spec.to_json()))
            )
        except sqlite3.IntegrityError:
            raise CollectionExists(collection=spec.name) from None
        self._collections[spec.name] = spec

    # --- objects -----------------------------------------------------------------------
    def add_object(
        self, collection: CollectionSpec, values: Mapping[str, object], now: float
    ) -> str:
        """Store a validated object; its new id. UniqueViolation names the property."""
        object_id = str(uuid.uuid4())
        owner = object_owner(object_id)
        with self._transaction() as db:
            db.execute("INSERT INTO objects VALUES (?, ?, ?)", (collection.name, object_id, now))
            for prop in collection.properties:
                value = values.get(prop.name)
                sealed = self._sealer.seal(collection.name, owner, prop.name, value)
                db.execute(
                    "INSERT INTO sealed_values VALUES (?, ?, ?, ?)",
                    (collection.name, owner, prop.name, sealed),
                )
                if prop.is_unique and value is not None:
                    digest = self._sealer.digest(collection.name, prop.name, value)
                    try:
                        db.execute(
                            "INSERT INTO unique_values VALUES (?, ?, ?, ?)",
                            (collection.name, prop.name, digest, object_id),
                        )
                    except sqlite3.IntegrityError:
                        raise UniqueViolation(property=prop.name) from None
        return object_id

    def objects(
        self, collection: CollectionSpec, object_ids: Sequence[str]
    ) -> dict[str, dict[str, object]]:
        """The current values of the existing objects among `object_ids`, each in the
        collection's property order."""
        found = self._db.execute(
            f"SELECT object_id FROM objects WHERE collection = ? "  # noqa: S608 (placeholders only)
            f"AND object_id IN ({marks(object_ids)})",
            (collection.name, *object_ids),
        ).fetchall()
        owners = {object_owner(object_id): object_id for (object_id,) in found}
        values = self._unseal_owners(collection.name, list(owners))
        order = [prop.name for prop in collection.properties]
        return {
            object_id: {
                name: values[owner][name] for name in order if name in values.get(owner, {})
            }
            for owner, object_id in owners.items()
        }

    # --- tokens ------------------------------------------------------------------------
    def add_tokens(self, collection: str, tokens: Sequence[Token], now: float) -> None:
        """Store tokens all-or-nothing. A deterministic token replaces its earlier self;
        any other token id that is live already raises TokenIdTaken."""
        with self._transaction():
            for token in tokens:
                if token.type != "deterministic" and self.find_tokens(
                    collection, TokenSelector((token.token_id,)), now
                ):
                    raise TokenIdTaken(token_id=token.token_id)
                self._delete(collection, token.token_id)
                self._insert(collection, token)

    def _insert(self, collection: str, token: Token) -> None:
        self._db.execute(
            "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                collection, token.token_id, token.type, token.object_id,
                json.dumps(token.props), json.dumps(token.tags), token.created_at, token.expires_at,
            ),
        )  # fmt: skip
        self._db.executemany(
            "INSERT INTO token_tags VALUES (?, ?, ?)",
            [(collection, tag, token.token_id) for tag in token.tags],
        )
        owner = token_owner(token.token_id)
        self._db.executemany(
            "INSERT INTO sealed_values VALUES (?, ?, ?, ?)",
            [
                (collection, owner, prop, self._sealer.seal(collection, owner, prop, value))
                for prop, value in (token.fields or {}).items()
            ],
        )

    def _delete(self, collection: str, token_id: str) -> None:
        key = (collection, token_id)
        self._db.execute("DELETE FROM tokens WHERE collection = ? AND token_id = ?", key)
        self._db.execute("DELETE FROM token_tags WHERE collection = ? AND token_id = ?", key)
        self._db.execute(
            "DELETE FROM sealed_values WHERE collection = ? AND owner = ?",
            (collection, token_owner(token_id)),
        )

    def find_tokens(self, collection: str, selector: TokenSelector, now: float) -> list[Token]:
        """Live tokens matching every non-empty criterion of `selector` (without fields),
        in the order of `selector.token_ids` when given, else as stored."""
        sql = f"SELECT {_ROW_COLUMNS} FROM tokens WHERE collection = ?"  # noqa: S608
        params: list[object] = [collection]
        if selector.token_ids:
            sql += f" AND token_id IN ({marks(selector.token_ids)})"
            params += selector.token_ids
        if selector.object_ids:
            sql += f" AND object_id IN ({marks(selector.object_ids)})"
            params += selector.object_ids
        if selector.tags:
            # Every listed tag must be on the token: count its matching (distinct) tags.
            sql += (
                " AND token_id IN (SELECT token_id FROM token_tags WHERE collection = ?"  # noqa: S608
                f" AND tag IN ({marks(selector.tags)}) GROUP BY token_id HAVING COUNT(*) = ?)"
            )
            params += [collection, *selector.tags, len(selector.tags)]
        # Expired tokens act as absent.
        sql += " AND (expires_at IS NULL OR expires_at > ?) ORDER BY rowid"
        params.append(now)
        tokens = [
            Token(row[0], row[1], row[2], tuple(json.loads(row[3])), tuple(json.loads(row[4])),
                  row[5], row[6])
            for row in self._db.execute(sql, params)
        ]  # fmt: skip
        if selector.token_ids:
            order = {token_id: index for index, token_id in enumerate(selector.token_ids)}
            tokens.sort(key=lambda token: order[token.token_id])
        return tokens

    def token_fields(
        self, collection: str, tokens: Sequence[Token]
    ) -> dict[str, dict[str, object]]:
        """Each token's fields: its snapshot, or for a pointer token the object's current
        values of the token's props. A pointer whose object is gone gets no entry."""
        owners = {
            token.token_id: object_owner(token.object_id)
            if token.type == "pointer" and token.object_id
            else token_owner(token.token_id)
            for token in tokens
        }
        values = self._unseal_owners(collection, sorted(set(owners.values())))
        result: dict[str, dict[str, object]] = {}
        for token in tokens:
            stored = values.get(owners[token.token_id])
            if stored is not None:
                result[token.token_id] = {p: stored[p] for p in token.props if p in stored}
        return result

    def delete_tokens(self, collection: str, tokens: Sequence[Token]) -> None:
        """Delete these tokens and their snapshots."""
        with self._transaction():
            for token in tokens:
                self._delete(collection, token.token_id)

    def rotate_tokens(self, collection: str, tokens: Sequence[Token]) -> dict[str, str]:
        """Give each token a new random id (the old id stops existing); old id -> new id."""
        snapshots = self.token_fields(collection, [t for t in tokens if t.type != "pointer"])
        renamed: dict[str, str] = {}
        with self._transaction():
            for token in tokens:
                new_id = str(uuid.uuid4())
                self._delete(collection, token.token_id)
                # Re-sealed, not copied: a snapshot's associated data names its token id.
                self._insert(collection, replace(token, token_id=new_id,
                                                 fields=snapshots.get(token.token_id)))  # fmt: skip
                renamed[token.token_id] = new_id
        return renamed
