"""The balancer, simulated with an injected clock and a seeded RNG."""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter

from shoal.mesh import Balancer
from shoal.registry import InstanceRecord
from shoal.testing import ManualClock


def endpoints(n: int) -> list[InstanceRecord]:
    return [
        InstanceRecord(
            app="a",
            service="s",
            instance=f"s-{i}",
            host="127.0.0.1",
            port=9000 + i,
            state="ready",
            started_at=time.time(),
        )
        for i in range(n)
    ]


def simulate(latency: dict[str, float], picks: int, rate: float, seed: int = 7) -> Counter[str]:
    """Open-loop arrivals at ``rate``/s; each request holds its endpoint for its latency."""
    clock = ManualClock()
    balancer = Balancer(clock=clock, rng=random.Random(seed))
    eps = endpoints(len(latency))
    lat = {e.instance: latency[k] for e, k in zip(eps, latency, strict=True)}
    pending: list[tuple[float, int, str, float]] = []  # (finish time, seq, instance, started)
    counts: Counter[str] = Counter()
    start = clock.now
    for seq in range(picks):
        arrival = start + seq / rate
        while pending and pending[0][0] <= arrival:
            done, _, inst, began = heapq.heappop(pending)
            clock.now = done
            balancer.finish(inst, began)
        clock.now = arrival
        chosen = balancer.pick(eps)
        assert chosen is not None
        counts[chosen.instance] += 1
        began = balancer.start(chosen.instance)
        heapq.heappush(pending, (arrival + lat[chosen.instance], seq, chosen.instance, began))
    return counts


def test_equal_endpoints_share_10k_picks_within_5_percent() -> None:
    counts = simulate({"a": 0.002, "b": 0.002, "c": 0.002, "d": 0.002}, picks=10_000, rate=1000)
    fair = 10_000 / 4
    for instance, n in counts.items():
        assert abs(n - fair) / fair < 0.05, (instance, counts)


def test_slow_endpoint_gets_under_10_percent_of_picks() -> None:
    counts = simulate({"fast1": 0.002, "fast2": 0.002, "slow": 0.020}, picks=10_000, rate=1000)
    assert counts["s-2"] / 10_000 < 0.10, counts
    assert counts["s-2"] > 0, "a slow endpoint is still probed now and then"


def test_endpoint_marked_down_is_never_chosen_until_its_time_is_up() -> None:
    clock = ManualClock()
    balancer = Balancer(clock=clock, rng=random.Random(1))
    eps = endpoints(3)
    balancer.mark_down("s-1", 5.0)
    assert all(balancer.pick(eps).instance != "s-1" for _ in range(2_000))  # type: ignore[union-attr]
    clock.advance(5.1)
    assert "s-1" in {balancer.pick(eps).instance for _ in range(200)}  # type: ignore[union-attr]


def test_pick_returns_none_when_everything_is_excluded_or_down() -> None:
    balancer = Balancer(clock=ManualClock())
    eps = endpoints(2)
    balancer.mark_down("s-0", 5.0)
    assert balancer.pick(eps, exclude={"s-1"}) is None
    assert balancer.pick([]) is None


def test_outstanding_requests_raise_an_endpoints_cost() -> None:
    clock = ManualClock()
    balancer = Balancer(clock=clock)
    balancer.finish("s-0", balancer.start("s-0"))  # measured once
    base = balancer.cost("s-0")
    balancer.start("s-0")
    balancer.start("s-0")
    assert balancer.cost("s-0") == base * 3


def test_a_new_endpoint_is_probed_at_once_even_by_a_sequential_caller() -> None:
    clock = ManualClock()
    balancer = Balancer(clock=clock, rng=random.Random(1))
    old, new = endpoints(2)
    for _ in range(20):  # old is measured and fast
        started = balancer.start(old.instance)
        clock.advance(0.0005)
        balancer.finish(old.instance, started)
    # new has never answered: it costs nothing, so it is chosen...
    assert balancer.pick([old, new]) == new
    started = balancer.start(new.instance)
    # ...but only one probe at a time: while it is out, new costs its peers' average
    assert balancer.cost(new.instance) > balancer.cost(old.instance)
    clock.advance(0.0005)
    balancer.finish(new.instance, started)
    assert balancer.cost(new.instance) > 0


def test_peak_latency_is_adopted_at_once_and_decays_when_idle() -> None:
    clock = ManualClock()
    balancer = Balancer(clock=clock, decay=10.0, default_rtt=0.001)
    began = balancer.start("s-0")
    clock.advance(0.050)
    balancer.finish("s-0", began)
    assert abs(balancer.cost("s-0") - 0.050) < 1e-9
    clock.advance(10.0)
    assert abs(balancer.cost("s-0") - 0.050 / 2.718281828) < 1e-4


def test_a_new_endpoint_gets_traffic_at_once_under_light_load() -> None:
    clock = ManualClock()
    balancer = Balancer(clock=clock, rng=random.Random(3), default_rtt=0.001)
    eps = endpoints(2)
    old = eps[:1]
    for _ in range(50):  # sequential calls, 0.4 ms each: the old endpoint measures fast
        chosen = balancer.pick(old)
        assert chosen is not None
        began = balancer.start(chosen.instance)
        clock.advance(0.0004)
        balancer.finish(chosen.instance, began)
    picks: Counter[str] = Counter()
    for _ in range(20):
        chosen = balancer.pick(eps)
        assert chosen is not None
        picks[chosen.instance] += 1
        began = balancer.start(chosen.instance)
        clock.advance(0.0004)
        balancer.finish(chosen.instance, began)
    assert picks["s-1"] >= 5, picks
