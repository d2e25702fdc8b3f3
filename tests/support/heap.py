"""The test session's heap held still around a test whose outcome rests on the gateway's
answer reserve (`piigate.pipeline.ANSWER_RESERVE_S`, 100 ms).

The in-process stack shares one heap with every test before it: a full collection walks
all of it (some 160,000 objects, 70 ms here, more on a loaded CI machine), and one that
lands between the vault timeout and the caller's deadline holds the GIL past the
reserve, so the caller sees its own bare DEADLINE_EXCEEDED. A gateway process does not
pay that: `piigate.cli.serve.settle_garbage_collector` freezes its start-up heap before
the first call. This does the same for the test, and thaws it afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
