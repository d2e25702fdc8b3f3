"""One-time tokens (the metrics are `test_metrics`'s)."""

from __future__ import annotations

import pytest

from piigate.errors import ReplayGuardFull, TokenReplayed
from piigate.limits.replay import ReplayGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_jti_is_accepted_once_until_its_token_expires() -> None:
    clock = Clock()
    guard = ReplayGuard(clock)
    guard.first_use("https://idp/", "j1", expires_at=1060.0)
    with pytest.raises(TokenReplayed):
        guard.first_use("https://idp/", "j1", expires_at=1060.0)
    guard.first_use("https://other-idp/", "j1", expires_at=1060.0)  # ids are per issuer
    clock.now = 1061.0
    guard.first_use("https://idp/", "j1", expires_at=1120.0)  # expired entries are forgotten


def test_a_full_guard_refuses_rather_than_forgets() -> None:
    clock = Clock()
    guard = ReplayGuard(clock, max_entries=2)
    guard.first_use("i", "a", 2000.0)
    guard.first_use("i", "b", 2000.0)
    with pytest.raises(ReplayGuardFull):
        guard.first_use("i", "c", 2000.0)
    clock.now = 2001.0
    guard.first_use("i", "c", 3000.0)
    assert len(guard) == 1
