"""Golden metrics in one process, over real sockets: the server histogram with the app's
route template and the proven caller's name, one client observation per call however
many retries, the retries counter, and the instance's own ``/.shoal/metrics``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from prometheus_client.parser import text_string_to_metric_families
from test_resilience import fast_retries, mesh, publish, record
from test_tracing import Flaky, inbound

from asgi_server import serve_asgi
from shoal.mesh._metrics import REGISTRY
from shoal.registry import Discovery, InstanceRecord, MemoryRegistry
from shoal.runtime._inbound import Inbound, InstanceStatus


def value(name: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, labels)
    return found or 0.0


def sample_sum(name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in REGISTRY.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_a_retried_call_is_one_client_observation_and_its_retries_are_counted(
    discovery: tuple[MemoryRegistry, Discovery],
) -> None:
    flaky = Flaky(failures=2)
    calls = "http_client_request_duration_seconds_count"
    before_calls = sample_sum(calls, shoal_caller="tester", shoal_service="svc")
    before_retries = value("shoal_client_retries_total", shoal_caller="tester", shoal_service="svc")
    before_503 = sample_sum(
        "http_server_request_duration_seconds_count",
        shoal_service="svc",
        http_response_status_code="503",
    )
    async with serve_asgi(inbound(flaky, "flaky")) as port:
        await publish(discovery, record("flaky", port))
        async with mesh(discovery[1], fast_retries()) as http:
            response = await http.get("http://svc/items")
    assert response.status_code == 200
    assert sample_sum(calls, shoal_caller="tester", shoal_service="svc") == before_calls + 1
    after_retries = value("shoal_client_retries_total", shoal_caller="tester", shoal_service="svc")
    assert after_retries == before_retries + 2
    after_503 = sample_sum(
        "http_server_request_duration_seconds_count",
        shoal_service="svc",
        http_response_status_code="503",
    )
    assert after_503 == before_503 + 2


async def test_the_route_template_not_the_path_and_the_admin_scrape() -> None:
    api = FastAPI()

    @api.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, int]:
        if order_id == 13:
            raise HTTPException(500, "unlucky")
        return {"id": order_id}

    rec = InstanceRecord(
        app="t", service="routes", instance="routes-1", host="127.0.0.1", port=1, started_at=0.0
    )
    async with (
        serve_asgi(Inbound(api, InstanceStatus(rec))) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        for n in (1, 2, 13):
            await http.get(f"/orders/{n}", headers={"shoal-caller": "web"})
        await http.get("/nowhere")
        scrape = await http.get("/.shoal/metrics")
    assert scrape.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape.text)}
    counts = {
        (s.labels["http_route"], s.labels["http_response_status_code"], s.labels["shoal_caller"]): (
            s.value
        )
        for s in families["http_server_request_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["shoal_service"] == "routes"
    }
    assert counts == {
        ("/orders/{order_id}", "200", "web"): 2.0,
        ("/orders/{order_id}", "500", "web"): 1.0,
        ("", "404", ""): 1.0,  # no route matched: no path in a label, no series per URL
    }
    active = families["http_server_active_requests"].samples
    assert [s.value for s in active if s.labels["shoal_service"] == "routes"] == [0.0]
