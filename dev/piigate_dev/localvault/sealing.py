"""Encryption of property values at rest (AES-256-GCM), and keyed digests.

Invariants:
1. Every stored property value (object properties and token snapshots) is sealed
   separately: `nonce(12 random bytes) || AES-256-GCM ciphertext+tag`.
2. The associated data binds a ciphertext to its place, `collection NUL owner NUL
   property` (owner is `object/<id>` or `token/<id>`), so a value copied to another row,
   property or collection fails to open instead of being read as that row's value. The
   join is unambiguous: names are letters, digits and `_`, ids letters, digits, `-`, `_`.
3. The data key is never used directly: HKDF-SHA256 derives one subkey per purpose (value
   encryption, keyed digests for unique checks and deterministic tokens, key check), so
   a digest never reveals anything about the encryption key.
4. The key-check value lets a store refuse a wrong key before touching any row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DATA_KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_CHECK_MESSAGE = b"piigate local vault key check v1"


class SealBroken(Exception):
    """A sealed value failed authentication: wrong key, tampering or a moved row."""


def _subkey(data_key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(data_key)


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _place(collection: str, owner: str, prop: str) -> bytes:
    return f"{collection}\0{owner}\0{prop}".encode()


# Plaintext framing: text (most PII) skips JSON both ways; anything else is JSON.
def _encode(value: object) -> bytes:
    if isinstance(value, str):
        return b"s" + value.encode()
    return b"j" + _canonical(value)


def _decode(plain: bytes) -> object:
    if plain[:1] == b"s":
        return plain[1:].decode()
    return json.loads(plain[1:])


class Sealer:
    """Seals and opens property values, and computes keyed digests, under one data key."""

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != DATA_KEY_BYTES:
            raise ValueError(f"the data key must be {DATA_KEY_BYTES} bytes")
        self._aead = AESGCM(_subkey(data_key, b"piigate-localvault/values"))
        self._digest_key = _subkey(data_key, b"piigate-localvault/digests")
        check_key = _subkey(data_key, b"piigate-localvault/key-check")
        self.key_check: bytes = hmac.new(check_key, _KEY_CHECK_MESSAGE, hashlib.sha256).digest()

    def seal(self, collection: str, owner: str, prop: str, value: object) -> bytes:
        """Encrypt `value` (any JSON value) for `(collection, owner, prop)`."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, _encode(value), _place(collection, owner, prop))

    def unseal(self, collection: str, owner: str, prop: str, sealed: bytes) -> object:
        """Decrypt a value sealed for exactly `(collection, owner, prop)`."""
        aad = _place(collection, owner, prop)
        try:
            plain = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SealBroken(f"{collection}/{owner}/{prop}") from None
        return _decode(plain)

    def digest(self, *parts: object) -> bytes:
        """A keyed digest of `parts`: equal inputs give equal digests, nothing else leaks."""
        return hmac.new(self._digest_key, _canonical(list(parts)), hashlib.sha256).digest()

    def deterministic_token_id(self, collection: str, fields: Mapping[str, object]) -> str:
        """The token id of a deterministic token: the same fields give the same id."""
        return str(uuid.UUID(bytes=self.digest("token", collection, dict(fields))[:16]))
