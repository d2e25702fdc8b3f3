"""The local vault's database: SQLite (stdlib sqlite3) holding only sealed values.

Property values, in objects and in token snapshots, live only in `sealed_values`, each
sealed by `piigate_dev.localvault.sealing` for its (collection, owner, property); unique
checks use keyed digests. Token tags and ids are search keys and are stored as given
(callers put hashes, not PII, in tags).

Access is synchronous and made directly from the aiohttp handlers: this is a loopback
development stand-in, and each call is a handful of indexed statements that sqlite3 keeps
prepared in its statement cache (about ten microseconds each), far cheaper than handing
the work to a thread. File databases use WAL with synchronous=NORMAL: a committed write
survives a crash of the process.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Self

from piigate_dev.localvault.errors import StartupError
from piigate_dev.localvault.sealing import Sealer

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, definition TEXT NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (collection TEXT, object_id TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (collection, object_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sealed_values (collection TEXT, owner TEXT, prop TEXT,
    sealed BLOB NOT NULL, PRIMARY KEY (collection, owner, prop)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unique_values (collection TEXT, prop TEXT, digest BLOB,
    object_id TEXT NOT NULL, PRIMARY KEY (collection, prop, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tokens (collection TEXT, token_id TEXT, type TEXT NOT NULL,
    object_id TEXT, props TEXT NOT NULL, tags TEXT NOT NULL, created_at REAL NOT NULL,
    expires_at REAL, PRIMARY KEY (collection, token_id));
CREATE INDEX IF NOT EXISTS tokens_by_object ON tokens (collection, object_id);
CREATE TABLE IF NOT EXISTS token_tags (collection TEXT, tag TEXT, token_id TEXT,
    PRIMARY KEY (collection, tag, token_id)) WITHOUT ROWID;
"""


class WrongDataKey(StartupError):
    """The data key does not open this database (its key-check value differs)."""


def object_owner(object_id: str) -> str:
    """The owner name of an object's sealed values."""
    return f"object/{object_id}"


def token_owner(token_id: str) -> str:
    """The owner name of a token snapshot's sealed values."""
    return f"token/{token_id}"


def marks(items: Sequence[object]) -> str:
    """`?,?,?`: one placeholder per item (values are always bound, never inlined)."""
    return ",".join("?" * len(items))


class SealedDatabase:
    """The connection, its transactions, the key check and reading sealed values."""

    def __init__(self, connection: sqlite3.Connection, sealer: Sealer) -> None:
        self._db = connection
        self._sealer = sealer

    @classmethod
    def open(cls, path: str, sealer: Sealer) -> Self:
        """Open (creating if needed) the database at `path` (or `:memory:`)."""
        db = sqlite3.connect(path, isolation_level=None, cached_statements=256)
        try:
            if path != ":memory:":
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            store = cls(db, sealer)
            store._check_key()
            store._loaded()
        except BaseException:
            db.close()
            raise
        return store

    def close(self) -> None:
        """Close the database (WAL content is checkpointed into the main file)."""
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _check_key(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
        if row is None:
            with self._transaction() as db:
                db.execute("INSERT INTO meta VALUES ('key_check', ?)", (self._sealer.key_check,))
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif bytes(row[0]) != self._sealer.key_check:
            raise WrongDataKey("the data key does not match this database")

    def _loaded(self) -> None:
        """Hook: the database is open and the key checked."""

    def _unseal_owners(
        self, collection: str, owners: Sequence[str]
    ) -> dict[str, dict[str, object]]:
        result: dict[str, dict[str, object]] = {}
        if not owners:
            return result
        rows = self._db.execute(
            f"SELECT owner, prop, sealed FROM sealed_values WHERE collection = ? "  # noqa: S608
            f"AND owner IN ({marks(owners)})",
            (collection, *owners),
        )
        for owner, prop, sealed in rows:
            result.setdefault(owner, {})[prop] = self._sealer.unseal(
                collection, owner, prop, sealed
            )
        return result
