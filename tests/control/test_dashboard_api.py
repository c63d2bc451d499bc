"""GET /v1/policies (what is in force) and GET /v1/failures (recent explained failures)."""

from __future__ import annotations

import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.control._telemetry_api import TELEMETRY_GETS, Query
from shoal.manifest import load_manifest
from shoal.telemetry import AsyncTelemetryStore, SpanRecord
from shoal.telemetry._records import AttributeValue

MANIFEST = """\
app: shop
default_policy: deny
services:
  catalog:
    asgi: catalog:app
    timeout: 2s
    retries: {attempts: 2}
  catalog-v2:
    asgi: catalog2:app
    service: catalog
    version: v2
  orders:
    asgi: orders:app
gateway:
  port: 8080
  tls: dev
  routes:
    - {prefix: /api/catalog, service: catalog, strip_prefix: true}
policies:
  - name: orders-reads-catalog
    target: catalog
    from: [orders]
    methods: [GET]
  - target: orders
    from: [gateway]
"""
NOW = time.time_ns()


async def _get(sup: Any, path: str, query: dict[str, list[str]] | None = None) -> Any:
    status, body = await TELEMETRY_GETS[path](sup, path, Query(query or {}))
    assert status == 200, body
    return body


async def test_policies_are_those_in_force(tmp_path: Path) -> None:
    (tmp_path / "shoal.yaml").write_text(MANIFEST)
    sup = types.SimpleNamespace(manifest=load_manifest(tmp_path))
    body = await _get(sup, "/v1/policies")
    assert body["default_policy"] == "deny"
    assert set(body["services"]) == {"catalog", "orders"}  # a version entry is not a service
    catalog = body["services"]["catalog"]
    assert catalog["timeout"] == 2.0
    assert catalog["retries"]["attempts"] == 2
    assert [r["name"] for r in catalog["authz"]["rules"]] == ["orders-reads-catalog"]
    assert body["gateway"]["routes"] == [
        {"prefix": "/api/catalog", "service": "catalog", "strip_prefix": True, "jwt": None}
    ]
    assert "tls" not in body["gateway"]
    assert [(r["name"], r["target"], r["from"]) for r in body["authz_rules"]] == [
        ("orders-reads-catalog", "catalog", ["orders"]),
        ("policies[1]", "orders", ["gateway"]),  # named as the mesh names it
    ]


@pytest.fixture
async def sup(tmp_path: Path) -> AsyncIterator[Any]:
    store = AsyncTelemetryStore(tmp_path / "telemetry.db")
    await store.start()
    try:
        yield types.SimpleNamespace(telemetry=types.SimpleNamespace(store=store))
    finally:
        await store.aclose()


def _span(n: int, attributes: dict[str, AttributeValue] | None = None) -> SpanRecord:
    return SpanRecord(
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        name="POST payments",
        kind="client",
        service="orders",
        instance="orders-1",
        start_ns=NOW + n * 1000,
        end_ns=NOW + n * 1000 + 500,
        status="error",
        status_message="deadline-exceeded",
        attributes=attributes or {},
    )


async def test_failures_say_what_where_and_why(sup: Any) -> None:
    await sup.telemetry.store.add_spans(
        [
            _span(1, {"shoal.reason": "deadline-exceeded", "http.response.status_code": 504}),
            _span(2),
            _span(3, {"shoal.reason": "shed"}),
        ]
    )
    body = await _get(sup, "/v1/failures", {"limit": ["10"]})
    assert body == [
        {
            "time_ns": NOW + 3500,
            "trace_id": f"{3:032x}",
            "span_id": f"{3:016x}",
            "service": "orders",
            "instance": "orders-1",
            "name": "POST payments",
            "reason": "shed",
            "status_code": None,
            "message": "deadline-exceeded",
        },
        {
            "time_ns": NOW + 1500,
            "trace_id": f"{1:032x}",
            "span_id": f"{1:016x}",
            "service": "orders",
            "instance": "orders-1",
            "name": "POST payments",
            "reason": "deadline-exceeded",
            "status_code": 504,
            "message": "deadline-exceeded",
        },
    ]
    with pytest.raises(ValueError, match="limit"):
        await TELEMETRY_GETS["/v1/failures"](sup, "/v1/failures", Query({"limit": ["0"]}))


async def test_failures_before_telemetry_runs_is_503() -> None:
    sup: Any = types.SimpleNamespace(telemetry=None)
    status, _ = await TELEMETRY_GETS["/v1/failures"](sup, "/v1/failures", Query({}))
    assert status == 503
