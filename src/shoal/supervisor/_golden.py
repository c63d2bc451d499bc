"""Golden metrics from a window of increments: per service, per edge, per route.

Rates are requests per second over the window; success is the share of answered
requests below 500 (as Linkerd counts it: a 4xx is the caller's mistake, not the
service's failure); percentiles come from the latency histograms, interpolated
inside buckets as Prometheus' ``histogram_quantile`` does. Services are measured
where they serve (every request, whoever sent it); edges where they are called
(the caller's view, once per call whatever its retries, failures to connect
included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.supervisor._metrics import (
    ACTIVE,
    CLIENT,
    EJECTIONS,
    RETRIES,
    SERVER,
    Window,
    quantile,
)

__all__ = ["golden"]


@dataclass
class _Tally:
    """Requests of one group: counts, failures by why, and the latency buckets."""

    requests: float = 0.0
    failures: float = 0.0
    errors: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)

    def count(self, labels: dict[str, str], value: float) -> None:
        self.requests += value
        status = labels.get("http_response_status_code", "")
        reason = labels.get("shoal_reason", "")
        failed = not status or int(status) >= 500
        if failed:
            self.failures += value
        why = reason or labels.get("error_type", "") or (f"status {status}" if failed else "")
        if why:
            self.errors[why] = self.errors.get(why, 0.0) + value

    def bucket(self, labels: dict[str, str], value: float) -> None:
        le = float(labels["le"])
        self.buckets[le] = self.buckets.get(le, 0.0) + value

    def summary(self, seconds: float) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            found = quantile(q, self.buckets)
            return None if found is None else round(found * 1000, 3)

        return {
            "requests": round(self.requests),
            "rps": round(self.requests / seconds, 3) if seconds > 0 else 0.0,
            "success": (
                round((self.requests - self.failures) / self.requests, 6) if self.requests else None
            ),
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "errors": {k: round(v) for k, v in sorted(self.errors.items())},
        }


def _group(
    window: Window, histogram: str, key: Callable[[dict[str, str]], tuple[str, ...] | None]
) -> dict[tuple[str, ...], _Tally]:
    tallies: dict[tuple[str, ...], _Tally] = {}
    for labels, value in window.series(f"{histogram}_count"):
        group = key(labels)
        if group is not None:
            tallies.setdefault(group, _Tally()).count(labels, value)
    for labels, value in window.series(f"{histogram}_bucket"):
        group = key(labels)
        if group is not None:
            tallies.setdefault(group, _Tally()).bucket(labels, value)
    return tallies


def _per_callee(window: Window, name: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for labels, value in window.series(name):
        service = labels.get("shoal_service", "")
        found[service] = found.get(service, 0) + round(value)
    return found


def golden(window: Window, instances: dict[str, int]) -> dict[str, Any]:
    """``/v1/stat``: services (with ``instances`` counted by the caller), edges, routes."""
    seconds = window.seconds
    services = _group(window, SERVER, lambda labels: (labels.get("shoal_service", ""),))
    retries = _per_callee(window, RETRIES)
    ejections = _per_callee(window, EJECTIONS)
    in_flight: dict[str, int] = {}
    for (sample, labels), value in window.gauges.items():
        if sample == ACTIVE:
            service = dict(labels).get("shoal_service", "")
            in_flight[service] = in_flight.get(service, 0) + round(value)

    def edge_of(labels: dict[str, str]) -> tuple[str, str] | None:
        caller = labels.get("shoal_caller", "")
        return (caller, labels.get("shoal_service", "")) if caller else None

    edges = _group(window, CLIENT, edge_of)
    # a service only ever called (and never reached) is a service all the same
    names = sorted({*instances, *(s for (s,) in services), *(t for _, t in edges)} - {""})
    service_rows = [
        {
            "service": name,
            "instances": instances.get(name, 0),
            **services.get((name,), _Tally()).summary(seconds),
            "in_flight": in_flight.get(name, 0),
            "retries": retries.get(name, 0),
            "ejections": ejections.get(name, 0),
        }
        for name in names
    ]

    edge_rows = []
    for (source, target), tally in sorted(edges.items()):
        summary = tally.summary(seconds)
        edge_rows.append({"source": source, "target": target, **summary})

    routes = _group(
        window,
        SERVER,
        lambda labels: (
            labels.get("shoal_service", ""),
            labels.get("http_route", ""),
            labels.get("http_request_method", ""),
        ),
    )
    route_rows = [
        {"service": service, "route": route, "method": method, **tally.summary(seconds)}
        for (service, route, method), tally in sorted(routes.items())
    ]
    return {
        "window_s": round(seconds, 3),
        "services": service_rows,
        "edges": edge_rows,
        "routes": route_rows,
    }
