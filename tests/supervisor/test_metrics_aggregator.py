"""The metrics aggregator: increments from cumulative snapshots (restarts included),
windows, percentiles, golden metrics, and one scrape that prometheus_client parses."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from shoal.mesh._metrics import BUCKETS, CLIENT_LABELS, SERVER_LABELS
from shoal.runtime._metrics_ship import snapshot
from shoal.supervisor._golden import golden
from shoal.supervisor._metrics import MetricsAggregator, quantile
from shoal.supervisor._metrics_history import MetricHistory, series
from shoal.telemetry import AsyncTelemetryStore


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()) // 60 * 60 - 3600)  # recent: the store keeps a week

    def __call__(self) -> float:
        return self.now


class Instance:
    """A process's registry with shoal's server and client histograms."""

    def __init__(self, service: str, name: str, boot: str = "a") -> None:
        self.service, self.name, self.boot = service, name, boot
        self.registry = CollectorRegistry()
        self.server = Histogram(
            "http_server_request_duration_seconds",
            "served",
            SERVER_LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.client = Histogram(
            "http_client_request_duration_seconds",
            "called",
            CLIENT_LABELS,
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "shoal_client_retries", "r", ["shoal_caller", "shoal_service"], registry=self.registry
        )

    def serve(self, n: int, status: int = 200, seconds: float = 0.003, reason: str = "") -> None:
        for _ in range(n):
            self.server.labels(self.service, "/x", "GET", str(status), "front", reason).observe(
                seconds
            )

    def call(self, target: str, n: int, status: int | None = 200, error: str = "") -> None:
        code = "" if status is None else str(status)
        for _ in range(n):
            self.client.labels(self.service, target, "GET", code, error, "").observe(0.004)

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.registry, self.service, self.name, self.boot)


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == pytest.approx(0.1)
    assert quantile(0.5, {}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_increments_are_exact_across_snapshots_instances_and_a_restart() -> None:
    clock = Clock()
    agg = MetricsAggregator(None, "app", clock=clock)
    one, two = Instance("store", "store-1"), Instance("store", "store-2")
    one.serve(10)
    two.serve(5, status=500)
    agg.receive(one.snapshot())
    agg.receive(two.snapshot())
    clock.now += 2
    one.serve(3)
    agg.receive(one.snapshot())  # cumulative 13: an increment of 3, not 13
    agg.receive(one.snapshot())  # nothing new: nothing counted twice
    clock.now += 2
    restarted = Instance("store", "store-2", boot="b")  # same name, counters from zero
    restarted.serve(2)
    agg.receive(restarted.snapshot())

    stat = golden(agg.window(60), {"store": 2})
    (store,) = stat["services"]
    assert store["requests"] == 20
    assert store["success"] == 15 / 20
    assert store["errors"] == {"status 500": 5}
    assert store["instances"] == 2
    assert store["p50_ms"] is not None
    assert 2.5 <= store["p50_ms"] <= 5.0  # 3 ms lies in the (2.5, 5] ms bucket


def test_windows_forget_what_is_older() -> None:
    clock = Clock()
    agg = MetricsAggregator(None, "app", clock=clock, slot=5, keep=900)
    inst = Instance("store", "store-1")
    inst.serve(4)
    agg.receive(inst.snapshot())
    clock.now += 120
    inst.serve(6)
    agg.receive(inst.snapshot())
    assert golden(agg.window(60), {})["services"][0]["requests"] == 6
    assert golden(agg.window(600), {})["services"][0]["requests"] == 10
    clock.now += 2000
    agg.receive(inst.snapshot())
    assert golden(agg.window(900), {})["services"] == []


def test_edges_come_from_callers_and_count_calls_that_never_got_an_answer() -> None:
    clock = Clock()
    agg = MetricsAggregator(None, "app", clock=clock)
    front = Instance("front", "front-1")
    front.call("store", 8)
    front.call("store", 2, status=None, error="no-endpoints")
    front.retries.labels("front", "store").inc(3)
    agg.receive(front.snapshot())
    stat = golden(agg.window(60), {})
    (edge,) = stat["edges"]
    assert (edge["source"], edge["target"], edge["requests"]) == ("front", "store", 10)
    assert edge["success"] == 0.8
    assert edge["errors"] == {"no-endpoints": 2}
    store = next(r for r in stat["services"] if r["service"] == "store")
    assert store["retries"] == 3


def test_the_scrape_merges_instances_and_parses() -> None:
    clock = Clock()
    agg = MetricsAggregator(None, "app", clock=clock)
    one, two = Instance("store", "store-1"), Instance("store", "store-2")
    one.serve(7)
    two.serve(4, status=503, reason="overloaded")
    one.retries.labels("store", "db").inc()
    agg.receive(one.snapshot())
    agg.receive(two.snapshot())
    text = agg.exposition()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = [
        s
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert {s.labels["shoal_instance"]: s.value for s in counts} == {
        "store-1": 7.0,
        "store-2": 4.0,
    }
    assert families["shoal_client_retries"].samples[0].value == 1.0
    # an instance that stopped reporting leaves the scrape
    clock.now += 60
    agg.receive(one.snapshot())
    families = {f.name: f for f in text_string_to_metric_families(agg.exposition())}
    instances = {s.labels["shoal_instance"] for s in families["shoal_client_retries"].samples}
    assert instances == {"store-1"}


def test_a_malformed_snapshot_is_refused_not_half_taken() -> None:
    agg = MetricsAggregator(None, "app")
    with pytest.raises(KeyError):
        agg.receive({"service": "x", "families": []})
    assert agg.exposition().strip() == ""


async def test_history_keeps_a_point_per_service_and_reads_back_as_series(tmp_path: Path) -> None:
    clock = Clock()
    agg = MetricsAggregator(None, "app", clock=clock)
    inst = Instance("store", "store-1")
    inst.serve(20, status=200)
    inst.serve(5, status=500)
    agg.receive(inst.snapshot())
    async with AsyncTelemetryStore(tmp_path / "telemetry.db") as store:
        history = MetricHistory(agg, store, lambda: {"store": 1}, every=10, clock=clock)
        start = clock.now
        clock.now += 10
        assert await history.record() == 5  # rps, success, p50, p99, in flight
        inst.serve(10)
        agg.receive(inst.snapshot())  # at the boundary: the next period's
        clock.now += 10
        await history.record()
        rows = await series(store, "store", since_ns=0)
    assert [r["rps"] for r in rows] == [2.5, 1.0]
    assert [r["success"] for r in rows] == [0.8, 1.0]
    assert [r["time"] for r in rows] == [start + 10, start + 20]
    assert all(r["p99_ms"] is not None for r in rows)
