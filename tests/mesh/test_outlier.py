"""Outlier detection, simulated with a manual clock and a seeded RNG."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from shoal.mesh._outlier import OutlierDetector
from shoal.testing import ManualClock

Outcome = Callable[[str], bool]


def call(detector: OutlierDetector, instances: list[str], rng: random.Random, ok: Outcome) -> str:
    """One request as the transport makes it: pick among the eligible, start, record."""
    chosen = rng.choice(detector.eligible(instances))
    detector.started(chosen)
    detector.record(chosen, ok(chosen))
    return chosen


def only_good(instance: str) -> bool:
    return instance == "good"


def fail_n(detector: OutlierDetector, instance: str, n: int = 5) -> None:
    for _ in range(n):
        detector.started(instance)
        detector.record(instance, False)


def test_a_failing_instance_is_ejected_and_the_rest_succeed() -> None:
    """good + bad (bad fails every request), one request per simulated ms: once bad is
    ejected, at least 99.9% of the next 1000 requests succeed; over the next 100 000
    (100 s, three ejections) bad sees only one probe each time its ejection runs out."""
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    rng = random.Random(3)
    instances = ["good", "bad"]
    while "bad" not in detector.ejected():
        call(detector, instances, rng, only_good)
        clock.advance(0.001)
    successes = 0
    for _ in range(1000):
        successes += only_good(call(detector, instances, rng, only_good))
        clock.advance(0.001)
    assert successes / 1000 >= 0.999
    to_bad = 0
    for _ in range(100_000):
        to_bad += call(detector, instances, rng, only_good) == "bad"
        clock.advance(0.001)
    assert to_bad == 2  # ejected for 30 s, probe fails; 60 s, probe fails; 90 s: still out


def test_ejection_grows_by_the_base_time_and_is_capped() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["good", "bad"])
    fail_n(detector, "bad")
    seen = []
    for _ in range(12):
        left = detector.ejected()["bad"]
        seen.append(left)
        clock.advance(left)
        assert detector.eligible(["good", "bad"]) == ["good", "bad"]  # on probation
        fail_n(detector, "bad", 1)  # the probe fails: ejected again, for longer
    assert seen == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_the_ejection_count_resets_after_max_ejection_of_health() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["good", "bad"])
    fail_n(detector, "bad")
    clock.advance(30.0)
    detector.record("bad", True)  # probe passes: restored
    clock.advance(100.0)
    fail_n(detector, "bad")
    assert detector.ejected() == {"bad": 60.0}  # back for 100 s only: second ejection
    clock.advance(60.0)
    detector.record("bad", True)
    clock.advance(300.0)
    fail_n(detector, "bad")
    assert detector.ejected() == {"bad": 30.0}  # healthy for 300 s: counts as the first


def test_two_instances_are_never_both_ejected_while_one_still_succeeds() -> None:
    """a fails every request; b fails four in five (never five in a row). b stays in."""
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    rng = random.Random(5)
    sent = {"a": 0, "b": 0}

    def ok(instance: str) -> bool:
        sent[instance] += 1
        return instance == "b" and sent["b"] % 5 == 0

    ejected_a = 0
    for _ in range(200_000):
        call(detector, ["a", "b"], rng, ok)
        out = detector.ejected()
        assert "b" not in out
        ejected_a += "a" in out
        clock.advance(0.001)
    assert ejected_a > 190_000


def test_the_ejection_limit_keeps_a_share_of_the_instances_in() -> None:
    """Three instances, two failing every request, max_ejected_fraction 0.5: only one is
    out at a time (max(1, floor(3 * 0.5))), the good one is never ejected, and the
    circuit never opens because not every instance is failing."""
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    rng = random.Random(6)
    instances = ["bad-1", "bad-2", "good"]
    for _ in range(100_000):
        call(detector, instances, rng, only_good)
        out = detector.ejected()
        assert len(out) <= 1
        assert "good" not in out
        clock.advance(0.001)


def test_half_of_four_instances_may_be_ejected() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["a", "b", "c", "d"])
    for instance in "abc":
        fail_n(detector, instance)
    assert sorted(detector.ejected()) == ["a", "b"]
    assert detector.eligible(["a", "b", "c", "d"]) == ["c", "d"]


def test_only_one_probe_is_sent_when_an_ejection_runs_out() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    instances = ["good", "bad"]
    detector.eligible(instances)
    fail_n(detector, "bad")
    assert detector.eligible(instances) == ["good"]
    clock.advance(30.0)
    assert detector.eligible(instances) == ["good", "bad"]
    detector.started("bad")  # the probe
    assert detector.eligible(instances) == ["good"]  # no second probe while it is out
    detector.abandoned("bad")  # cancelled: no verdict, so another probe may go
    assert detector.eligible(instances) == ["good", "bad"]
    detector.started("bad")
    clock.advance(29.0)
    assert detector.eligible(instances) == ["good"]
    clock.advance(1.0)  # no answer after base_ejection: taken as abandoned
    assert detector.eligible(instances) == ["good", "bad"]


def test_all_failing_ejects_all_then_a_probe_success_restores() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    instances = ["a", "b"]
    detector.eligible(instances)
    fail_n(detector, "a")
    fail_n(detector, "b", 4)
    assert detector.ejected() == {"a": 30.0}
    fail_n(detector, "b", 1)  # every instance is failing: the circuit opens
    assert detector.ejected() == {"a": 30.0, "b": 30.0}
    assert detector.eligible(instances) == []
    clock.advance(30.0)
    assert detector.eligible(instances) == ["a", "b"]
    detector.started("a")
    detector.record("a", True)
    detector.started("b")
    detector.record("b", False)
    assert detector.ejected() == {"b": 60.0}
    assert detector.eligible(instances) == ["a"]
    for _ in range(10):
        detector.started("a")
        detector.record("a", True)
    assert detector.eligible(instances) == ["a"]


def test_a_lone_instance_is_ejected_only_because_every_instance_fails() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["only"])
    fail_n(detector, "only", 4)
    assert detector.eligible(["only"]) == ["only"]
    fail_n(detector, "only", 1)
    assert detector.eligible(["only"]) == []


def test_a_success_resets_the_consecutive_count() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["a", "b"])
    for _ in range(10):
        fail_n(detector, "a", 4)
        detector.record("a", True)
    assert detector.ejected() == {}


def test_answers_to_requests_sent_before_the_ejection_do_not_end_it() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["a", "b"])
    fail_n(detector, "a")
    clock.advance(1.0)
    detector.record("a", True)
    assert detector.ejected() == {"a": 29.0}


def test_forget_drops_instances_that_left() -> None:
    clock = ManualClock()
    detector = OutlierDetector(clock=clock)
    detector.eligible(["a", "b", "c", "d"])
    fail_n(detector, "a")
    fail_n(detector, "b")
    detector.forget({"b", "c"})
    assert detector.ejected() == {"b": 30.0}
    fail_n(detector, "c")  # of the two known now, one (b) is out already: c stays in ...
    assert detector.eligible(["b", "c"]) == []  # ... unless, as here, both are failing


@pytest.mark.parametrize(
    "kwargs",
    [
        {"consecutive_failures": 0},
        {"base_ejection": 0.0},
        {"max_ejection": -1.0},
        {"max_ejected_fraction": 1.5},
    ],
)
def test_outlier_detector_rejects_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        OutlierDetector(**kwargs)
