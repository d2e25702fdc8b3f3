"""When to call piigate again: `google.rpc.RetryInfo` first, bounded attempts, never a
refusal. Pure: a failure's code and retry hint in, a delay or `None` out.

The rules, in order:

1. At most `max_attempts` calls per customer, the first included.
2. Only RESOURCE_EXHAUSTED and UNAVAILABLE are retried. Any other failure is an answer:
   asking again gets the same answer and writes a second audit event.
3. RESOURCE_EXHAUSTED is retried only when it carries a RetryInfo: a rate limit says when
   it passes. Without one (a harvesting cap, `DISTINCT_SUBJECTS_EXCEEDED`) it is final.
4. A RetryInfo delay longer than `max_wait_s` is not waited for: the customer's row says
   so, and the agent decides when to try again.
5. UNAVAILABLE (piigate answers it only when nothing was disclosed) waits its RetryInfo
   delay when it has one, else `backoff_s` doubling per attempt up to `max_backoff_s`.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRIED_CODES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long and how often to wait; the defaults suit a person at a terminal."""

    max_attempts: int = 3
    max_wait_s: float = 30.0
    backoff_s: float = 0.5
    max_backoff_s: float = 4.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_wait_s < 0 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("waits must not be negative")


def retry_delay(
    code: str, retry_after_s: float | None, attempts_made: int, policy: RetryPolicy
) -> float | None:
    """Seconds to wait before the next attempt, or `None` when this failure is final.

    `code` is the gRPC status code's name; `retry_after_s` the RetryInfo delay, if sent;
    `attempts_made` counts the calls so far, this failed one included."""
    if attempts_made >= policy.max_attempts or code not in RETRIED_CODES:  # rules 1, 2
        return None
    if retry_after_s is not None:
        return retry_after_s if retry_after_s <= policy.max_wait_s else None  # rule 4
    if code == "RESOURCE_EXHAUSTED":  # rule 3
        return None
    return float(min(policy.backoff_s * 2 ** (attempts_made - 1), policy.max_backoff_s))  # rule 5
