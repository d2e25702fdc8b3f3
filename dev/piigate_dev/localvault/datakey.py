"""Where the data key comes from when the config gives none (start-up I/O only).

- An in-memory vault gets a random key: its data dies with the process anyway.
- A file vault gets `<data file>.key`, created once (mode 0600, base64) and reused on
  every later start, with a warning each time: a key lying next to the data it protects
  is for development only.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from pathlib import Path

from piigate_dev.localvault.errors import StartupError
from piigate_dev.localvault.sealing import DATA_KEY_BYTES

MEMORY = ":memory:"


class DataKeyFileError(StartupError):
    """The development key file exists but does not hold a usable key."""


def key_file_for(data_path: str) -> Path:
    """The development key file that goes with `data_path`."""
    return Path(f"{data_path}.key")


def resolve_data_key(
    configured: bytes | None, data_path: str, warn: Callable[[str], None]
) -> bytes:
    """The configured key, else a random one (memory) or the key file's (created once)."""
    if configured is not None:
        return configured
    if data_path == MEMORY:
        return os.urandom(DATA_KEY_BYTES)
    path = key_file_for(data_path)
    key = _read_or_create(path)
    warn(
        f"warning: the local vault's data key is kept in {path}, next to the data it "
        "protects: development only. Configure data_key_env or data_key_file instead."
    )
    return key


def _read_or_create(path: Path) -> bytes:
    try:
        # O_EXCL: never overwrite a key someone else just created (or an existing one).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    key = os.urandom(DATA_KEY_BYTES)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(base64.b64encode(key).decode() + "\n")
    return key


def _read(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (OSError, UnicodeDecodeError, binascii.Error, ValueError) as exc:
        raise DataKeyFileError(
            f"cannot read the data key file {path}: {type(exc).__name__}"
        ) from None
    if len(key) != DATA_KEY_BYTES:
        raise DataKeyFileError(
            f"the data key file {path} does not hold a {DATA_KEY_BYTES}-byte key"
        )
    return key
