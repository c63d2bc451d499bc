"""Retry backoff (full jitter) and the retry budget, with a manual clock and a seeded RNG."""

from __future__ import annotations

import random
from typing import Any

import pytest

from shoal.mesh._backoff import full_jitter
from shoal.mesh._budget import RetryBudget
from shoal.testing import ManualClock

# --- full jitter -------------------------------------------------------------------------


def test_full_jitter_stays_within_the_doubling_ceiling() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8)]:
        waits = [full_jitter(attempt, base=0.1, cap=10.0, rng=rng) for _ in range(2000)]
        assert all(0.0 <= w <= ceiling for w in waits)
        assert max(waits) > 0.95 * ceiling  # the whole range is used ...
        assert sum(waits) / len(waits) == pytest.approx(ceiling / 2, rel=0.05)  # ... uniformly


def test_full_jitter_is_capped() -> None:
    rng = random.Random(2)
    waits = [full_jitter(30, base=0.1, cap=2.0, rng=rng) for _ in range(1000)]
    assert max(waits) <= 2.0
    assert max(waits) > 1.9
    assert 0.0 <= full_jitter(100_000, base=1.0, cap=5.0, rng=rng) <= 5.0  # no overflow


def test_full_jitter_is_repeatable_with_the_same_seed() -> None:
    first = [full_jitter(n, base=0.05, cap=1.0, rng=random.Random(9)) for n in range(1, 6)]
    again = [full_jitter(n, base=0.05, cap=1.0, rng=random.Random(9)) for n in range(1, 6)]
    assert first == again


@pytest.mark.parametrize("attempt", [0, -1])
def test_full_jitter_rejects_attempts_below_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        full_jitter(attempt, base=0.1, cap=1.0, rng=random.Random())


# --- retry budget ------------------------------------------------------------------------


def test_retry_budget_caps_retries_at_twenty_percent_plus_ten_per_second() -> None:
    """An upstream failing every request: each request wants 2 retries, 100 requests/s for
    60 s. Over every window of the budget's ten 1 s slots (windows starting on a slot
    boundary, as the budget counts them) retries stay within 20% of requests + 10/s * 10 s,
    and overall they reach at least 97% of that bound (0.3 retries per request)."""
    clock = ManualClock(1000.0)  # on a slot boundary, so slot k is [1000 + k, 1001 + k)
    budget = RetryBudget(ratio=0.2, min_per_second=10.0, window=10.0, clock=clock)
    requests = [0] * 60  # per 1 s slot
    retries = [0] * 60
    for tick in range(6000):  # one request every 10 ms
        second = tick // 100
        budget.record_request()
        requests[second] += 1
        for _ in range(2):
            if budget.try_retry():
                retries[second] += 1
                assert budget.retries <= 0.2 * budget.requests + 100
        clock.advance(0.01)
    for start in range(60 - 9):
        window_requests = sum(requests[start : start + 10])
        window_retries = sum(retries[start : start + 10])
        assert window_retries <= 0.2 * window_requests + 100
    bound = 0.2 * sum(requests) + 10 * 60
    assert 0.97 * bound <= sum(retries) <= bound
    assert sum(retries) / sum(requests) == pytest.approx(0.3, abs=0.01)


def test_retry_budget_refusal_counts_nothing() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, window=10.0, clock=clock)
    assert sum(budget.try_retry() for _ in range(15)) == 10
    assert budget.retries == 10
    assert not budget.try_retry()
    assert budget.retries == 10


def test_retry_budget_allows_min_per_second_retries_without_traffic() -> None:
    clock = ManualClock()
    budget = RetryBudget(ratio=0.2, min_per_second=10.0, window=10.0, clock=clock)
    allowed = sum(budget.try_retry() for _ in range(500))
    assert allowed == 100  # 10/s over the 10 s window, with no requests at all
    assert budget.requests == 0


def test_retry_budget_slots_expire_after_the_window() -> None:
    clock = ManualClock(1000.0)
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(100):
        budget.record_request()
    assert sum(budget.try_retry() for _ in range(80)) == 50
    clock.advance(5.0)
    assert (budget.requests, budget.retries) == (100, 50)
    assert not budget.try_retry()  # still spent, half a window later
    clock.advance(5.0)
    assert (budget.requests, budget.retries) == (0, 0)  # the whole window has passed
    assert not budget.try_retry()  # no requests, no reserve: nothing to spend
    budget.record_request()
    budget.record_request()
    assert budget.try_retry()
    assert not budget.try_retry()


def test_retry_budget_old_slots_leave_one_at_a_time() -> None:
    clock = ManualClock(1000.0)
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(10):  # 10 requests in each of 10 slots
        for _ in range(10):
            budget.record_request()
        clock.advance(1.0)
    assert budget.requests == 90  # the first slot has already gone
    clock.advance(3.0)
    assert budget.requests == 60


def test_retry_budget_survives_a_long_silence() -> None:
    clock = ManualClock(1000.0)
    budget = RetryBudget(clock=clock)
    budget.record_request()
    clock.advance(3600.0)
    assert budget.requests == 0
    budget.record_request()
    assert budget.requests == 1


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": -0.1}, {"min_per_second": -1.0}, {"window": 0.0}],
)
def test_retry_budget_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryBudget(**kwargs)
