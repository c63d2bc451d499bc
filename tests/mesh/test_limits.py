"""Bulkhead, adaptive concurrency limit and per-caller rate limits, on a manual clock."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from shoal.mesh._bulkhead import Bulkhead
from shoal.mesh._limiter import AdaptiveLimiter
from shoal.mesh._ratelimit import CallerRateLimits, TokenBucket
from shoal.testing import ManualClock

# --- bulkhead ----------------------------------------------------------------------------


def test_bulkhead_refuses_the_request_past_the_cap_at_once() -> None:
    bulkhead = Bulkhead(2)
    assert bulkhead.try_acquire()
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    assert (bulkhead.in_flight, bulkhead.limit) == (2, 2)


def test_bulkhead_release_frees_a_slot() -> None:
    bulkhead = Bulkhead(1)
    assert bulkhead.try_acquire()
    assert not bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.in_flight == 0
    assert bulkhead.try_acquire()


def test_bulkhead_lowered_limit_lets_requests_in_flight_finish() -> None:
    bulkhead = Bulkhead(3)
    for _ in range(3):
        assert bulkhead.try_acquire()
    bulkhead.set_limit(1)
    assert bulkhead.limit == 1
    assert not bulkhead.try_acquire()
    bulkhead.release()
    bulkhead.release()
    assert not bulkhead.try_acquire()  # one still in flight: at the new cap
    bulkhead.release()
    assert bulkhead.try_acquire()


def test_bulkhead_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="1 or more"):
        Bulkhead(0)
    with pytest.raises(ValueError, match="1 or more"):
        Bulkhead().set_limit(-1)
    with pytest.raises(RuntimeError, match="without a matching"):
        Bulkhead().release()


# --- adaptive concurrency limit ----------------------------------------------------------


@dataclass
class Run:
    """What the simulation saw, with times in seconds from its start."""

    limits: list[tuple[float, int]] = field(default_factory=list)  # at each arrival
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (admitted, latency)
    arrivals: int = 0
    shed: int = 0

    def limits_after(self, warmup: float) -> list[int]:
        return [limit for t, limit in self.limits if t >= warmup]

    def p99_after(self, warmup: float) -> float:
        latencies = sorted(latency for t, latency in self.latencies if t >= warmup)
        return latencies[int(0.99 * len(latencies))]

    def admitted_per_second(self, warmup: float, seconds: float) -> float:
        return sum(1 for t, _ in self.latencies if t >= warmup) / (seconds - warmup)


def simulate(
    limiter: AdaptiveLimiter,
    clock: ManualClock,
    *,
    capacity: float,
    rate: float,
    seconds: float,
    base: Callable[[float], float],
    seed: int = 1,
) -> Run:
    """Discrete events: Poisson arrivals at ``rate``/s for ``seconds``; an admitted request
    takes ``base(t) * max(1, in_flight / capacity)``, ``in_flight`` counting it, so the
    service finishes at most ``capacity / base`` requests a second and queues past that."""
    rng = random.Random(seed)
    run, start = Run(), clock.now
    finishing: list[tuple[float, int, float]] = []  # (finish time, sequence, started)
    arrival = start + rng.expovariate(rate)
    while arrival < start + seconds or finishing:
        if finishing and (finishing[0][0] <= arrival or arrival >= start + seconds):
            finish, _, started = heapq.heappop(finishing)
            clock.advance(finish - clock.now)
            limiter.release(started)
            run.latencies.append((started - start, finish - started))
            continue
        clock.advance(arrival - clock.now)
        run.arrivals += 1
        run.limits.append((clock.now - start, limiter.limit))
        started_at = limiter.try_acquire()
        if started_at is None:
            run.shed += 1
        else:
            latency = base(clock.now - start) * max(1.0, limiter.in_flight / capacity)
            heapq.heappush(finishing, (clock.now + latency, run.arrivals, started_at))
        arrival = clock.now + rng.expovariate(rate)
    return run


@pytest.mark.parametrize("capacity", [10, 40])
def test_adaptive_limit_converges_near_capacity_under_three_times_overload(
    capacity: int,
) -> None:
    """A service of ``capacity`` concurrent requests at 10 ms each, offered three times
    what it can serve for 40 s. After a 10 s warm-up the limit stays between capacity / 2
    and 2 * capacity (probes included), the p99 latency of admitted requests stays under
    3x the unloaded 10 ms, throughput stays at 95% of capacity or more, and the rest
    (at least 60% of arrivals) is shed."""
    clock = ManualClock()
    limiter = AdaptiveLimiter(clock=clock)
    base, seconds, warmup = 0.010, 40.0, 10.0
    run = simulate(
        limiter,
        clock,
        capacity=capacity,
        rate=3 * capacity / base,
        seconds=seconds,
        base=lambda t: base,
    )
    limits = run.limits_after(warmup)
    assert capacity / 2 <= min(limits)
    assert max(limits) <= 2 * capacity
    assert run.p99_after(warmup) < 3 * base
    assert run.admitted_per_second(warmup, seconds) >= 0.95 * capacity / base
    assert run.shed >= 0.6 * run.arrivals


def test_adaptive_limit_measures_again_when_the_service_slows_down() -> None:
    """Capacity 20 at three times overload; at 10 s every request becomes twice as slow
    (20 ms). Probes re-measure the unloaded latency: from 30 s on the limit is between
    10 and 40 again and the p99 latency under 3x the new 20 ms."""
    clock = ManualClock()
    limiter = AdaptiveLimiter(clock=clock)
    run = simulate(
        limiter,
        clock,
        capacity=20,
        rate=6000.0,
        seconds=45.0,
        base=lambda t: 0.010 if t < 10.0 else 0.020,
    )
    limits = run.limits_after(30.0)
    assert min(limits) >= 10
    assert max(limits) <= 40
    assert run.p99_after(30.0) < 3 * 0.020


def test_adaptive_limit_does_not_shrink_under_light_load() -> None:
    """A tenth of capacity (20 at 10 ms): nothing is shed, and the limit never drops
    below where it started (so not below min_limit either)."""
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=20, min_limit=4, clock=clock)
    run = simulate(limiter, clock, capacity=20, rate=200.0, seconds=30.0, base=lambda t: 0.010)
    assert run.shed == 0
    assert min(limit for _, limit in run.limits) >= 20


def test_adaptive_limit_never_exceeds_max_limit() -> None:
    """A service that never queues (capacity far above any limit) under heavy load:
    the limit climbs to max_limit and stays there, never above."""
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=10, min_limit=4, max_limit=50, clock=clock)
    run = simulate(limiter, clock, capacity=1e9, rate=20_000.0, seconds=10.0, base=lambda t: 0.010)
    limits = [limit for _, limit in run.limits]
    assert max(limits) == 50
    assert run.limits_after(5.0)[-1] == 50


def test_dropped_requests_cut_the_limit_down_to_min_and_no_further() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=20, min_limit=4, clock=clock)
    started = limiter.try_acquire()
    assert started is not None
    clock.advance(1.0)
    limiter.release(started, dropped=True)
    assert limiter.limit == 18  # 20 * 0.9
    for _ in range(50):
        started = limiter.try_acquire()
        assert started is not None
        limiter.release(started, dropped=True)
    assert limiter.limit == 4


def test_adaptive_limiter_sheds_at_the_limit_and_says_when_to_retry() -> None:
    clock = ManualClock()
    limiter = AdaptiveLimiter(initial_limit=4, min_limit=4, clock=clock)
    started = [limiter.try_acquire() for _ in range(5)]
    assert started[:4] == [clock.now] * 4
    assert started[4] is None
    assert limiter.in_flight == 4
    assert limiter.retry_after() == 1  # nothing measured yet
    clock.advance(2.5)
    for s in started[:4]:
        assert s is not None
        limiter.release(s)
    assert limiter.in_flight == 0
    for _ in range(10):
        s = limiter.try_acquire()
        assert s is not None
        clock.advance(2.5)
        limiter.release(s)
    assert limiter.retry_after() == 3  # the recent 2.5 s latency, rounded up


def test_adaptive_limiter_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="min_limit <= initial_limit"):
        AdaptiveLimiter(initial_limit=2, min_limit=4)
    with pytest.raises(RuntimeError, match="without a matching"):
        AdaptiveLimiter().release(0.0)


# --- rate limits -------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(10.0, burst=5.0, clock=clock)
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    assert bucket.retry_after() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.retry_after() == 0.0
    assert bucket.try_take()
    assert not bucket.try_take()
    taken = 0
    for _ in range(10_000):  # 10 s, one try a millisecond
        clock.advance(0.001)
        taken += bucket.try_take()
    assert taken == pytest.approx(100, abs=1)


def test_token_bucket_burst_defaults_to_the_rate_but_at_least_one() -> None:
    clock = ManualClock()
    fast = TokenBucket(20.0, clock=clock)
    assert sum(fast.try_take() for _ in range(50)) == 20
    slow = TokenBucket(0.5, clock=clock)
    assert [slow.try_take(), slow.try_take()] == [True, False]
    assert slow.retry_after() == pytest.approx(2.0)


def test_token_bucket_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(5.0, burst=0.5)


def test_caller_rate_limits_apply_per_caller_with_star_as_default() -> None:
    clock = ManualClock()
    limits = CallerRateLimits({"orders": 2.0, "*": 1.0}, clock=clock)
    assert [limits.try_take("orders") for _ in range(3)] == [True, True, False]
    assert limits.retry_after("orders") == pytest.approx(0.5)
    assert [limits.try_take("billing") for _ in range(2)] == [True, False]
    assert limits.try_take("search")  # its own "*" bucket, not billing's
    assert limits.retry_after("billing") == pytest.approx(1.0)
    clock.advance(1.0)
    assert limits.try_take("billing")


def test_caller_rate_limits_without_star_leave_other_callers_alone() -> None:
    clock = ManualClock()
    limits = CallerRateLimits({"orders": 1.0}, clock=clock)
    assert all(limits.try_take("billing") for _ in range(1000))
    assert limits.retry_after("billing") == 0.0
    assert CallerRateLimits({}, clock=clock).try_take("anyone")


def test_caller_rate_limits_forget_callers_whose_buckets_refilled() -> None:
    clock = ManualClock()
    limits = CallerRateLimits({"*": 100.0}, clock=clock)
    for n in range(10_000):
        assert limits.try_take(f"caller-{n}")
        clock.advance(0.001)  # a bucket is full again 10 ms after its one request
    assert len(limits._buckets) <= 1024


def test_caller_rate_limits_reject_bad_rates() -> None:
    with pytest.raises(ValueError, match="'orders'"):
        CallerRateLimits({"orders": 0.0})
