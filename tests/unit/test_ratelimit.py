"""Abuse limits with a fake clock: token buckets, per-key rate limits, distinct subjects.

Times and rates are chosen to be exact in binary floating point (halves, quarters), so
the expected waits are compared with ==.
"""

from __future__ import annotations

import pytest

from piigate.limits.ratelimit import (
    ALLOWED,
    Decision,
    DistinctSubjectWindow,
    Rate,
    RateLimiter,
    TokenBucket,
    hash_subject,
)

CALLER = ("fhir", "fhir-app")
OTHER_CALLER = ("fhir", "batch-job")


def subject(n: int) -> tuple[str, str]:
    return ("fhir", f"subject-{n}")


# --- TokenBucket ------------------------------------------------------------------------
def test_a_new_bucket_allows_its_burst_then_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3)
    assert [bucket.take(100.0) for _ in range(3)] == [None, None, None]
    assert bucket.take(100.0) == 0.5  # one token at 2/s
    assert bucket.take(100.25) == 0.25
    assert bucket.take(100.5) is None
    assert bucket.take(100.5) == 0.5


def test_refill_is_proportional_to_time_and_capped_at_burst() -> None:
    bucket = TokenBucket(rate_per_s=4.0, burst=2)
    assert bucket.take(0.0) is None
    assert bucket.take(0.0) is None
    assert bucket.take(0.0) == 0.25
    # 10 s idle refills to the burst of 2, not to 40.
    assert [bucket.take(10.0) for _ in range(3)] == [None, None, 0.25]


def test_a_refused_take_consumes_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1)
    assert bucket.take(0.0) is None
    for _ in range(5):
        assert bucket.take(0.5) == 0.5
    assert bucket.take(1.0) is None


def test_slow_rates_give_long_retry_after() -> None:
    bucket = TokenBucket(rate_per_s=0.5, burst=1)  # one request every 2 s
    assert bucket.take(0.0) is None
    assert bucket.take(0.0) == 2.0
    assert bucket.take(1.5) == 0.5


def test_wait_peeks_without_taking() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1)
    assert bucket.wait(0.0) is None
    assert bucket.wait(0.0) is None
    assert bucket.take(0.0) is None
    assert bucket.wait(0.0) == 1.0


def test_a_clock_going_backwards_credits_no_tokens() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1)
    assert bucket.take(10.0) is None
    assert bucket.take(5.0) == 1.0  # no time invented, no negative refill either
    assert bucket.take(10.5) == 0.5
    assert bucket.take(11.0) is None


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("nan"), 1), (1.0, 0)])
def test_bucket_parameters_are_validated(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst)
    with pytest.raises(ValueError, match="must be"):
        Rate(rate, burst)


# --- RateLimiter ------------------------------------------------------------------------
def limiter(max_keys: int = 100) -> RateLimiter:
    return RateLimiter(caller=Rate(per_s=2.0, burst=4), subject=Rate(per_s=1.0, burst=2),
                       max_keys=max_keys)


def test_the_caller_limit_refuses_with_its_retry_after() -> None:
    limits = limiter()
    decisions = [limits.check(CALLER, subject(n), 0.0) for n in range(5)]
    assert decisions[:4] == [ALLOWED] * 4
    assert decisions[4] == Decision(allowed=False, limit="caller", retry_after_s=0.5)
    assert limits.check(CALLER, subject(9), 0.5) == ALLOWED


def test_the_subject_limit_refuses_across_callers() -> None:
    limits = limiter()
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    assert limits.check(OTHER_CALLER, subject(1), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(1), 0.0) == Decision(False, "subject", 1.0)
    assert limits.check(CALLER, subject(1), 0.75) == Decision(False, "subject", 0.25)
    assert limits.check(CALLER, subject(1), 1.0) == ALLOWED


def test_a_refusal_by_one_limit_takes_no_token_from_the_other() -> None:
    limits = limiter()
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    for _ in range(10):  # refused by the subject limit ...
        assert limits.check(CALLER, subject(1), 0.0).limit == "subject"
    # ... and the caller still has 2 of its 4 tokens.
    assert limits.check(CALLER, subject(2), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(3), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(4), 0.0).limit == "caller"


def test_when_both_limits_refuse_the_later_wait_is_reported() -> None:
    limits = RateLimiter(caller=Rate(per_s=4.0, burst=1), subject=Rate(per_s=0.5, burst=1))
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(1), 0.0) == Decision(False, "subject", 2.0)
    limits = RateLimiter(caller=Rate(per_s=0.5, burst=1), subject=Rate(per_s=4.0, burst=1))
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(1), 0.0) == Decision(False, "caller", 2.0)


def test_keys_are_isolated_per_caller_and_per_profile() -> None:
    limits = limiter()
    for n in range(4):
        assert limits.check(CALLER, subject(n), 0.0) == ALLOWED
    assert limits.check(CALLER, subject(10), 0.0).limit == "caller"
    assert limits.check(OTHER_CALLER, subject(10), 0.0) == ALLOWED
    assert limits.check(("other-profile", "fhir-app"), subject(11), 0.0) == ALLOWED
    # The same subject id under another profile is another key.
    assert limits.check(OTHER_CALLER, ("other-profile", "subject-10"), 0.0) == ALLOWED


def test_idle_buckets_expire_once_full_so_forgetting_them_loses_nothing() -> None:
    limits = limiter()
    assert limits.check(CALLER, subject(1), 0.0) == ALLOWED
    assert limits.tracked_keys() == {"caller": 1, "subject": 1}
    # Caller bucket: 4 tokens at 2/s is full after 2 s; subject: 2 at 1/s, also 2 s.
    assert limits.check(OTHER_CALLER, subject(2), 1.75) == ALLOWED
    assert limits.tracked_keys() == {"caller": 2, "subject": 2}
    assert limits.check(OTHER_CALLER, subject(2), 2.0) == ALLOWED
    assert limits.tracked_keys() == {"caller": 1, "subject": 1}


def test_memory_is_bounded_by_max_keys() -> None:
    limits = limiter(max_keys=3)
    for n in range(50):
        assert limits.check(("fhir", f"caller-{n}"), subject(n), 0.0) == ALLOWED
        counts = limits.tracked_keys()
        assert counts["caller"] <= 3
        assert counts["subject"] <= 3
    assert limits.tracked_keys() == {"caller": 3, "subject": 3}


def test_max_keys_is_validated() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        limiter(max_keys=0)


# --- DistinctSubjectWindow --------------------------------------------------------------
def test_new_subjects_beyond_the_cap_are_refused_known_ones_still_allowed() -> None:
    window = DistinctSubjectWindow(max_subjects=3, window_s=60.0)
    assert [window.observe(CALLER, h, 0.0) for h in ("a", "b", "c")] == [True] * 3
    assert window.observe(CALLER, "d", 1.0) is False
    assert window.observe(CALLER, "a", 2.0) is True  # seen before: not new
    assert window.distinct_subjects(CALLER, 2.0) == 3  # "d" was not recorded


def test_the_window_slides_with_each_subjects_last_sighting() -> None:
    window = DistinctSubjectWindow(max_subjects=2, window_s=10.0)
    assert window.observe(CALLER, "a", 0.0)
    assert window.observe(CALLER, "b", 4.0)
    assert not window.observe(CALLER, "c", 9.75)
    # "a" was seen at 0: it leaves the window at exactly 10.
    assert window.observe(CALLER, "c", 10.0)
    assert window.distinct_subjects(CALLER, 10.0) == 2
    # Seeing "b" again at 13 keeps it in until 23, so at 20 only "b" and "c" count.
    assert window.observe(CALLER, "b", 13.0)
    assert not window.observe(CALLER, "d", 19.0)
    assert window.observe(CALLER, "d", 20.0)  # "c" (seen at 10) has left
    assert not window.observe(CALLER, "e", 22.75)
    assert window.distinct_subjects(CALLER, 22.75) == 2


def test_a_harvest_cannot_double_up_across_a_boundary() -> None:
    window = DistinctSubjectWindow(max_subjects=5, window_s=60.0)
    allowed = [window.observe(CALLER, f"s{n}", 59.0 + n * 0.25) for n in range(10)]
    assert allowed == [True] * 5 + [False] * 5


def test_callers_are_counted_separately() -> None:
    window = DistinctSubjectWindow(max_subjects=1, window_s=60.0)
    assert window.observe(CALLER, "a", 0.0)
    assert not window.observe(CALLER, "b", 0.0)
    assert window.observe(OTHER_CALLER, "b", 0.0)
    assert window.observe(("other-profile", "fhir-app"), "b", 0.0)


def test_memory_is_bounded_per_caller_and_in_callers() -> None:
    window = DistinctSubjectWindow(max_subjects=4, window_s=60.0, max_callers=2)
    for n in range(100):
        window.observe(CALLER, f"s{n}", float(n) / 100)
    assert window.distinct_subjects(CALLER, 1.0) == 4
    for n in range(10):
        window.observe(("fhir", f"caller-{n}"), "s", 1.0)
        assert window.tracked_callers() <= 2


def test_an_idle_caller_is_forgotten_after_one_window() -> None:
    window = DistinctSubjectWindow(max_subjects=1, window_s=30.0)
    assert window.observe(CALLER, "a", 0.0)
    assert window.tracked_callers() == 1
    assert window.observe(OTHER_CALLER, "a", 29.5)
    assert window.tracked_callers() == 2
    assert window.observe(OTHER_CALLER, "a", 30.0)
    assert window.tracked_callers() == 1
    assert window.observe(CALLER, "b", 30.0)


@pytest.mark.parametrize(
    ("max_subjects", "window_s", "max_callers"), [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)]
)
def test_window_parameters_are_validated(
    max_subjects: int, window_s: float, max_callers: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        DistinctSubjectWindow(max_subjects, window_s, max_callers)


# --- subject hashing --------------------------------------------------------------------
def test_subject_hashes_are_keyed_stable_and_unambiguous() -> None:
    key = b"k" * 32
    one = hash_subject("https://issuer/", "user-1", key)
    assert one == hash_subject("https://issuer/", "user-1", key)
    assert len(one) == 64
    assert "user-1" not in one
    assert one != hash_subject("https://issuer/", "user-1", b"x" * 32)
    assert one != hash_subject("https://other/", "user-1", key)
    assert hash_subject("a", "bc", key) != hash_subject("ab", "c", key)
