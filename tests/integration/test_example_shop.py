"""examples/shop runs as its manifest says: four services and the gateway, real processes;
an order is a saga over catalog, inventory and payments, kept in the services' state."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from procs import ServeProcess, serve_env

from shoal.backbone import Backbone, EmbeddedNats, NatsRegistry
from shoal.manifest import load_manifest
from shoal.registry import Discovery

pytestmark = pytest.mark.integration

SHOP = Path(__file__).parents[2] / "examples" / "shop"


def start(
    target: str, service: str, instance: str, nats_url: str, log: Path, app_dir: Path
) -> ServeProcess:
    env = serve_env(
        nats_url,
        app="shop",
        SHOAL_APP_DIR=str(app_dir),
        SHOAL_SERVICE=service,
        SHOAL_INSTANCE=instance,
        SHOAL_PORT="0",  # the gateway's 8080 is for people; tests take a free port
    )
    return ServeProcess([target], env, log, cwd=app_dir)


@pytest.fixture
async def shop(nats_server: EmbeddedNats, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Every replica the manifest asks for, the gateway, and a client pointed at the gateway.
    The shop runs from a copy: its state (stock, orders) starts fresh under tmp_path."""
    app_dir = tmp_path / "shop"
    shutil.copytree(SHOP, app_dir, ignore=shutil.ignore_patterns(".shoal", "__pycache__"))
    manifest = load_manifest(app_dir)
    wanted = {name: spec.replicas for name, spec in manifest.services.items()} | {"gateway": 1}
    procs: list[ServeProcess] = []
    backbone = await Backbone.connect(nats_server.url)
    discovery = Discovery(NatsRegistry(backbone, "shop"))
    try:
        for name, spec in manifest.services.items():
            assert spec.asgi is not None
            for i in range(spec.replicas):
                log = tmp_path / f"{name}-{i}.log"
                procs.append(start(spec.asgi, name, f"{name}-{i}", nats_server.url, log, app_dir))
        gateway = start(
            "shoal.gateway:app", "gateway", "gateway-0", nats_server.url, tmp_path / "g", app_dir
        )
        procs.append(gateway)
        await discovery.start()
        try:
            await discovery.wait_for(
                lambda c: all(len(c.ready(s)) == n for s, n in wanted.items()), timeout=60
            )
        except TimeoutError:
            logs = "\n".join(f"--- {p.log.name}\n{p.output()}" for p in procs)
            raise AssertionError(f"the shop did not come up:\n{logs}") from None
        address = discovery.ready("gateway")[0].address
        async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
            yield http
    finally:
        await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in procs))  # by pid
        await discovery.aclose()
        await backbone.aclose()


async def test_the_catalog_answers_through_the_gateway_from_both_replicas(
    shop: httpx.AsyncClient,
) -> None:
    replies = [await shop.get("/api/catalog/products") for _ in range(40)]
    assert all(r.status_code == 200 for r in replies)
    products = {p["id"]: p for p in replies[0].json()["products"]}
    assert products["mug"] == {"id": "mug", "name": "Enamel mug", "price_cents": 1200}
    assert {r.json()["instance"] for r in replies} == {"catalog-0", "catalog-1"}
    assert replies[0].headers["shoal-route"] == "/api/catalog"


async def test_an_order_runs_its_saga_and_can_be_read_back(shop: httpx.AsyncClient) -> None:
    placed = await shop.post("/api/orders", json={"product_id": "tee", "quantity": 2})
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert (order["unit_price_cents"], order["total_cents"], order["status"]) == (
        2500,
        5000,
        "paid",
    )
    assert order["reservation_id"].startswith("res-")
    assert order["charge_id"] == f"ch-{order['id']}"
    assert set(order["answered_by"]) == {"orders", "catalog", "inventory", "payments"}
    assert order["answered_by"]["inventory"] in {"inventory-0", "inventory-1"}

    again = await shop.get(f"/api/orders/{order['id']}")
    assert (again.status_code, again.json()) == (200, order)
    # the stock is kept in inventory's state: both replicas see it taken
    stocks = [(await shop.get("/api/inventory/stock/tee")).json() for _ in range(20)]
    assert {s["available"] for s in stocks} == {10 - 2}
    assert {s["instance"] for s in stocks} == {"inventory-0", "inventory-1"}
    # the paid order's event went out through orders' outbox; catalog counted it, once
    await until_sold(shop, "tee", 2)
    two = [(await shop.post("/api/orders", json={"product_id": "tee"})).status_code for _ in "ab"]
    assert two == [201, 201]
    await until_sold(shop, "tee", 4)
    await asyncio.sleep(0.5)
    assert (await shop.get("/api/catalog/products/tee")).json()["sold"] == 4


async def until_sold(shop: httpx.AsyncClient, product: str, sold: int) -> None:
    async with asyncio.timeout(10):
        while (await shop.get(f"/api/catalog/products/{product}")).json()["sold"] != sold:  # noqa: ASYNC110 - polling over HTTP
            await asyncio.sleep(0.05)


async def test_failed_orders_say_why_and_release_their_reservation(
    shop: httpx.AsyncClient,
) -> None:
    unknown, too_many, declined = await asyncio.gather(
        shop.post("/api/orders", json={"product_id": "yacht"}),
        shop.post("/api/orders", json={"product_id": "tote", "quantity": 6}),
        shop.post("/api/orders", json={"product_id": "mug", "quantity": 20}),  # 240.00
    )
    assert (unknown.status_code, too_many.status_code, declined.status_code) == (404, 409, 402)
    assert "'yacht'" in unknown.json()["detail"]
    assert "only 5 of 'tote' left" in too_many.json()["detail"]
    assert declined.json()["detail"].startswith("payments: declined")
    stock = (await shop.get("/api/inventory/stock")).json()["stock"]
    assert (stock["mug"], stock["tote"]) == (25, 5)  # the declined order's reservation is back
