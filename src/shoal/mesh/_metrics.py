"""Golden metrics of this process, in Prometheus form: requests served, calls made, and why
some failed.

Names and labels follow OpenTelemetry's HTTP semantic conventions as Prometheus
writes them (``http.server.request.duration`` in seconds becomes
``http_server_request_duration_seconds``); shoal's own labels start ``shoal_``:

- ``http_server_request_duration_seconds`` (histogram): every request this process
  served, by ``shoal_service``, ``http_route`` (the route template when the app's
  router names one, else empty: raw paths would make a series per URL),
  ``http_request_method``, ``http_response_status_code``, ``shoal_caller`` (the
  proven caller, empty for outside callers) and ``shoal_reason`` (why the mesh
  answered itself: ``shed``, ``denied:<rule>``, ``deadline-exceeded``...).
- ``http_server_active_requests`` (gauge): requests in flight, by service.
- ``http_client_request_duration_seconds`` (histogram): every mesh call this process
  made, once per call whatever its retries, by ``shoal_caller`` (this service) and
  ``shoal_service`` (the callee) — the edges of the service graph — plus method,
  status (empty when no answer came) and ``error_type`` (why not).
- ``shoal_client_retries_total``, ``shoal_outlier_ejections_total``: by edge.
- ``shoal_tls_refusals_total``: connections refused by this instance's mTLS, by reason.
- ``shoal_mirror_requests_total``: copies sent to a mirror, by outcome.

Everything is in one registry per process (:data:`REGISTRY`), never the global
one, so an app's own prometheus-client metrics stay the app's. A serving instance
answers it on ``/.shoal/metrics`` and ships it to the supervisor, which serves the
whole app's in one scrape (``/v1/metrics``).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BUCKETS",
    "CLIENT_LABELS",
    "REGISTRY",
    "SERVER_LABELS",
    "ClientTimer",
    "ServerTimer",
    "count_ejection",
    "count_mirror",
    "count_refusal",
    "count_retry",
    "exposition",
]

REGISTRY = CollectorRegistry(auto_describe=False)

BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Latency bucket bounds in seconds: OpenTelemetry's HTTP advice, plus sub-5 ms buckets
for calls on one host."""

SERVER_LABELS = (
    "shoal_service",
    "http_route",
    "http_request_method",
    "http_response_status_code",
    "shoal_caller",
    "shoal_reason",
)
CLIENT_LABELS = (
    "shoal_caller",
    "shoal_service",
    "http_request_method",
    "http_response_status_code",
    "error_type",
    "shoal_reason",
)

_SERVER = Histogram(
    "http_server_request_duration_seconds",
    "Duration of HTTP requests served, through the mesh's inbound guard.",
    SERVER_LABELS,
    buckets=BUCKETS,
    registry=REGISTRY,
)
_ACTIVE = Gauge(
    "http_server_active_requests",
    "HTTP requests being served.",
    ["shoal_service"],
    registry=REGISTRY,
)
_CLIENT = Histogram(
    "http_client_request_duration_seconds",
    "Duration of mesh calls made, retries included, one per call.",
    CLIENT_LABELS,
    buckets=BUCKETS,
    registry=REGISTRY,
)
_RETRIES = Counter(
    "shoal_client_retries",
    "Attempts of mesh calls beyond the first.",
    ["shoal_caller", "shoal_service"],
    registry=REGISTRY,
)
_EJECTIONS = Counter(
    "shoal_outlier_ejections",
    "Instances taken out of rotation by outlier detection.",
    ["shoal_caller", "shoal_service"],
    registry=REGISTRY,
)
_REFUSALS = Counter(
    "shoal_tls_refusals",
    "Connections refused by this instance's mTLS, by reason.",
    ["shoal_service", "reason"],
    registry=REGISTRY,
)
_MIRRORED = Counter(
    "shoal_mirror_requests",
    "Copies of requests sent to a mirror version.",
    ["shoal_caller", "shoal_service", "outcome"],
    registry=REGISTRY,
)

# Children by label values: prometheus-client's labels() takes a lock and checks
# every value each time; a dict lookup per request is cheaper.
_server_children: dict[tuple[str, ...], Any] = {}
_client_children: dict[tuple[str, ...], Any] = {}
_active_children: dict[tuple[str, ...], Any] = {}


def _child(metric: Any, cache: dict[tuple[str, ...], Any], values: tuple[str, ...]) -> Any:
    child = cache.get(values)
    if child is None:
        child = cache[values] = metric.labels(*values)
    return child


class ServerTimer:
    """Times one served request; :meth:`done` records it. Counts it in flight meanwhile."""

    __slots__ = ("_active", "_started", "service")

    def __init__(self, service: str) -> None:
        self.service = service
        self._active = _child(_ACTIVE, _active_children, (service,))
        self._active.inc()
        self._started = time.perf_counter()

    def done(self, route: str, method: str, status: int, caller: str, reason: str) -> None:
        elapsed = time.perf_counter() - self._started
        self._active.dec()
        values = (self.service, route, method, str(status) if status else "", caller, reason)
        _child(_SERVER, _server_children, values).observe(elapsed)


class ClientTimer:
    """Times one mesh call (all its attempts); :meth:`done` records it."""

    __slots__ = ("_caller", "_method", "_service", "_started")

    def __init__(self, caller: str, service: str, method: str) -> None:
        self._caller = caller
        self._service = service
        self._method = method
        self._started = time.perf_counter()

    def done(self, status: int | None, reason: str = "", error_type: str = "") -> None:
        """``status`` None: no answer came (``error_type`` says why)."""
        elapsed = time.perf_counter() - self._started
        if status is not None and status >= 500 and not error_type:
            error_type = str(status)  # what the semantic conventions ask for a 5xx
        values = (
            self._caller,
            self._service,
            self._method,
            str(status) if status is not None else "",
            error_type,
            reason,
        )
        _child(_CLIENT, _client_children, values).observe(elapsed)


def count_retry(caller: str, service: str) -> None:
    _RETRIES.labels(caller, service).inc()


def count_ejection(caller: str, service: str) -> None:
    _EJECTIONS.labels(caller, service).inc()


def count_refusal(service: str, reason: str) -> None:
    _REFUSALS.labels(service, reason).inc()


def count_mirror(caller: str, service: str, outcome: str) -> None:
    _MIRRORED.labels(caller, service, outcome).inc()


def exposition() -> bytes:
    """This process's metrics in Prometheus text format."""
    return generate_latest(REGISTRY)
