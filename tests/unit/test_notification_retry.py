"""The retry schedule of a failing delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ordermesh_notification.domain import GiveUp, Retry, RetryPolicy

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_s=0.5, max_backoff_s=10.0)
    assert [policy.delay_after(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_a_huge_attempt_count_stays_at_the_cap() -> None:
    assert RetryPolicy(base_s=0.5, max_backoff_s=300.0).delay_after(10_000) == 300.0


def test_each_failure_but_the_last_schedules_the_next_try() -> None:
    policy = RetryPolicy(max_attempts=3, base_s=0.5, max_backoff_s=300.0)
    assert policy.after_failure(0, NOW) == Retry(1, NOW + timedelta(seconds=0.5))
    assert policy.after_failure(1, NOW) == Retry(2, NOW + timedelta(seconds=1))
    assert policy.after_failure(2, NOW) == GiveUp(3)


def test_one_attempt_means_no_retry() -> None:
    assert RetryPolicy(max_attempts=1).after_failure(0, NOW) == GiveUp(1)
