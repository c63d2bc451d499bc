"""The control API's read-only endpoints: traces, logs, metrics, stats, policies, failures.

Each handler takes the supervisor, the request path and its query, and returns
``(status, payload)``; a :class:`Text` payload is sent as ``text/plain`` (the
Prometheus scrape), anything else as JSON. :data:`TELEMETRY_GETS` maps the first
two path segments (``/v1/traces``) to the handler.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shoal.manifest._authz import rule_name
from shoal.telemetry._records import LEVELS
from shoal.types import Send

if TYPE_CHECKING:
    from shoal.supervisor._supervisor import Supervisor

__all__ = ["TELEMETRY_GETS", "Query", "Text", "send_text"]


class Text(str):
    """A payload sent as text, with its content type."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format


class Query:
    """A request's query string, with typed, bounded reads."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    def text(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[-1] if values and values[-1] != "" else None

    def flag(self, name: str) -> bool:
        return self.text(name) in ("1", "true", "yes")

    def number(self, name: str, default: float, low: float, high: float) -> float:
        text = self.text(name)
        if text is None:
            return default
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g}, got {text}")
        return value


Handler = Callable[["Supervisor", str, Query], Awaitable[tuple[int, Any]]]


async def send_text(send: Send, status: int, text: Text) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", text.content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_NOT_RUNNING = 503, {"error": "telemetry is not running yet"}


async def traces(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/traces`` (recent summaries, newest first) and ``/v1/traces/ID`` (its spans)."""
    if sup.telemetry is None:
        return _NOT_RUNNING
    store = sup.telemetry.store
    trace_id = path.removeprefix("/v1/traces").strip("/")
    if trace_id:
        spans = await store.trace(trace_id.lower())
        if not spans:
            return 404, {"error": f"no trace {trace_id!r} (kept 7 days at most)"}
        return 200, [s.model_dump(mode="json") for s in spans]
    min_ms = query.text("min_ms")
    summaries = await store.traces(
        service=query.text("service"),
        errors_only=query.flag("errors"),
        min_duration_ms=float(min_ms) if min_ms else None,
        limit=int(query.number("limit", 50, 1, 1000)),
    )
    return 200, [t.model_dump(mode="json") for t in summaries]


_TRACE_ID = re.compile(r"[0-9a-f]{32}")


async def logs(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/logs``: log records, newest first.

    ``service``; ``level`` (the least severe kept); ``text`` (in the message, any
    case); ``trace_id``; ``since_s`` (unix seconds); ``limit`` (1 to 5000, 200).
    """
    if path.rstrip("/") != "/v1/logs":
        return 404, {"error": f"no such endpoint {path!r}; did you mean /v1/logs?"}
    if sup.telemetry is None:
        return _NOT_RUNNING
    level = query.text("level")
    if level is not None:
        level = level.lower()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    trace_id = query.text("trace_id")
    if trace_id is not None:
        trace_id = trace_id.lower()
        if not _TRACE_ID.fullmatch(trace_id):
            raise ValueError(f"trace_id must be 32 hex digits, got {trace_id!r}")
    since_s = query.number("since_s", -1, 0, 1e11)
    records = await sup.telemetry.store.logs(
        service=query.text("service"),
        level=level,
        text=query.text("text"),
        trace_id=trace_id,
        since_ns=int(since_s * 1e9) if since_s >= 0 else None,
        limit=int(query.number("limit", 200, 1, 5000)),
    )
    return 200, [r.model_dump(mode="json") for r in records]


async def metrics(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/metrics``: the whole app's metrics in Prometheus text format (one scrape)."""
    if sup.metrics is None:
        return _NOT_RUNNING
    return 200, Text(sup.metrics.exposition(_instance_metrics(sup)))


def _instance_metrics(sup: Supervisor) -> list[Metric]:
    """What the supervisor knows of each instance: ready or not, restarts."""
    ready = GaugeMetricFamily(
        "shoal_instance_ready",
        "1 when the instance is ready to take traffic.",
        labels=["shoal_service", "shoal_instance", "shoal_version"],
    )
    restarts = CounterMetricFamily(
        "shoal_instance_restarts",
        "Times the supervisor restarted the instance.",
        labels=["shoal_service", "shoal_instance", "shoal_version"],
    )
    for row in sup.ps():
        labels = [row["service"], row["instance"], row["version"] or ""]
        ready.add_metric(labels, 1.0 if row["health"] == "ready" else 0.0)
        restarts.add_metric(labels, float(row["restarts"]))
    return [ready, restarts]


async def stat(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/stat?window=60``: golden metrics per service, edge and route over the window."""
    if sup.metrics is None:
        return _NOT_RUNNING
    from shoal.supervisor._golden import golden  # here: the supervisor package imports us

    seconds = query.number("window", 60, 1, 900)
    body = golden(sup.metrics.window(seconds), sup.instance_counts())
    return 200, {**body, "time": time.time()}


async def series(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/series?service=S&minutes=15``: a service's stored golden metrics over time."""
    if sup.telemetry is None:
        return _NOT_RUNNING
    service = query.text("service")
    if service is None:
        raise ValueError("series needs ?service=NAME")
    from shoal.supervisor._metrics_history import series as stored_series

    minutes = query.number("minutes", 15, 1, 7 * 24 * 60)
    since_ns = int((time.time() - minutes * 60) * 1e9)
    points = await stored_series(sup.telemetry.store, service, since_ns)
    return 200, {"service": service, "points": points}


async def policies(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/policies``: what is in force: each service's traffic and authorization policy,
    the gateway's routes and the app's authorization rules (as last applied)."""
    manifest = sup.manifest
    gateway = manifest.gateway
    return 200, {
        "manifest": str(manifest.path),
        "default_policy": manifest.default_policy,
        "services": {
            name: policy.model_dump(mode="json") for name, policy in manifest.policies().items()
        },
        "gateway": None if gateway is None else gateway.model_dump(mode="json", exclude={"tls"}),
        "authz_rules": [
            {**rule.model_dump(mode="json"), "name": rule.name or rule_name(index)}
            for index, rule in enumerate(manifest.authz_rules)
        ],
    }


async def failures(sup: Supervisor, path: str, query: Query) -> tuple[int, Any]:
    """``/v1/failures?limit=50``: recent failed spans the mesh explained, newest first."""
    if sup.telemetry is None:
        return _NOT_RUNNING
    spans = await sup.telemetry.store.failures(int(query.number("limit", 50, 1, 1000)))
    return 200, [
        {
            "time_ns": s.end_ns,
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "service": s.service,
            "instance": s.instance,
            "name": s.name,
            "reason": s.attributes.get("shoal.reason"),
            "status_code": s.attributes.get("http.response.status_code"),
            "message": s.status_message,
        }
        for s in spans
    ]


TELEMETRY_GETS: dict[str, Handler] = {
    "/v1/traces": traces,
    "/v1/logs": logs,
    "/v1/metrics": metrics,
    "/v1/stat": stat,
    "/v1/series": series,
    "/v1/policies": policies,
    "/v1/failures": failures,
}
