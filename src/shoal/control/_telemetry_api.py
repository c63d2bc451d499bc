"""The control API's read-only telemetry endpoints: traces, logs, metrics, stats.

Each handler takes the supervisor, the request path and its query, and returns
``(status, payload)``; a :class:`Text` payload is sent as ``text/plain`` (the
Prometheus scrape), anything else as JSON. :data:`TELEMETRY_GETS` maps the first
two path segments (``/v1/traces``) to the handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shoal.types import Send

if TYPE_CHECKING:
    from shoal.supervisor._supervisor import Supervisor

__all__ = ["TELEMETRY_GETS", "Query", "Text", "send_text"]


class Text(str):
    """A payload sent as text, with its content type."""

    content_type = "text/plain; charset=utf-8"


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


TELEMETRY_GETS: dict[str, Handler] = {
    "/v1/traces": traces,
}
