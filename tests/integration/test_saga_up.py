"""The shop's place-order saga under `shoal up`, real processes: a declined payment
releases the reservation; an orders instance SIGKILLed while payments holds the charge
is restarted, the saga resumes, and stock, charges and orders end consistent."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_security_up import _free_port, _ps, _up

from shoal.state import open_sqlite

pytestmark = pytest.mark.integration

SHOP = Path(__file__).parents[2] / "examples" / "shop"
SAGA = "_shoal/saga/place-order/"


@dataclass
class Shop:
    app_dir: Path
    env: dict[str, str]
    http: httpx.Client
    hold: Path  # while this file exists, payments holds every charge

    def stock(self) -> dict[str, int]:
        answer = self.http.get("/api/inventory/stock")
        assert answer.status_code == 200, answer.text
        stock: dict[str, int] = answer.json()["stock"]
        return stock

    def order(self, product_id: str, quantity: int, key: str) -> httpx.Response:
        return self.http.post(
            "/api/orders",
            json={"product_id": product_id, "quantity": quantity},
            headers={"idempotency-key": key},
        )

    def stored(self, service: str, prefix: str) -> dict[str, Any]:
        """What ``service`` keeps under ``prefix``, read from its SQLite file directly."""

        async def read() -> dict[str, Any]:
            async with await open_sqlite(self.app_dir, service) as store:
                return dict(await store.list(prefix))

        return asyncio.run(read())

    def sagas(self) -> dict[str, dict[str, Any]]:
        """The saga records in orders' state, by product ordered."""
        return {r["input"]["product_id"]: r for r in self.stored("orders", SAGA).values()}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    app_dir = tmp_path_factory.mktemp("saga") / "shop"
    shutil.copytree(SHOP, app_dir, ignore=shutil.ignore_patterns(".shoal", "__pycache__"))
    hold = app_dir / "hold-charges"
    manifest = app_dir / "shoal.yaml"
    text = manifest.read_text()
    assert text.count("    asgi: payments:app\n") == 1
    manifest.write_text(
        text.replace(
            "    asgi: payments:app\n",
            f"    asgi: payments:app\n    env: {{SHOP_HOLD_CHARGES: '{hold}'}}\n",
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    port = _free_port()
    env["SHOAL_GATEWAY_PORT"] = str(port)
    with (
        _up(app_dir, env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        yield Shop(app_dir, env, http, hold)


@pytest.mark.timeout(180)
def test_a_declined_payment_releases_the_reservation(shop: Shop) -> None:
    before = shop.stock()
    declined = shop.order("mug", 20, "declined-once")  # 240.00: over the 200.00 limit
    assert declined.status_code == 402, declined.text
    assert declined.json()["detail"].startswith("payments: declined: 24000 cents")
    assert shop.stock() == before  # the reservation was released

    record = shop.sagas()["mug"]
    assert record["status"] == "compensated"
    assert record["error"]["step"] == "charge"
    assert record["error"]["status"] == 402
    assert record["undone"] == ["reserve", "open"]  # in reverse
    (reservation,) = shop.stored("inventory", "reservation:").values()
    assert (reservation["product_id"], reservation["status"]) == ("mug", "released")
    order = shop.http.get(f"/api/orders/{record['id']}").json()
    assert order["status"] == "cancelled"
    assert order["reason"].startswith("payments: declined")

    again = shop.order("mug", 20, "declined-once")  # the stored outcome, not a new run
    assert (again.status_code, again.json()) == (402, declined.json())
    assert shop.sagas()["mug"]["attempts"] == record["attempts"]
    assert shop.stock() == before


@pytest.mark.timeout(180)
def test_a_saga_cut_off_by_a_killed_instance_is_resumed_and_ends_consistent(
    shop: Shop,
) -> None:
    before = shop.stock()
    shop.hold.touch()
    waiting: list[Future[httpx.Response]] = []
    with ThreadPoolExecutor(2) as pool:
        try:
            waiting.append(pool.submit(shop.order, "tee", 1, "crash-then-paid"))
            waiting.append(pool.submit(shop.order, "sticker", 60, "crash-then-declined"))

            # Both sagas are at their charge, which payments holds: kill their owners.
            deadline = time.monotonic() + 30
            while True:
                seen = {p: shop.sagas().get(p) for p in ("tee", "sticker")}
                charging = [
                    r for r in seen.values() if r and r["done"] == 2 and r["attempts"]["charge"]
                ]
                if len(charging) == 2:
                    break
                assert time.monotonic() < deadline, seen
                time.sleep(0.1)
            owners = {int(r["owner"].split("/")[1]) for r in charging}
            rows = _ps(shop.app_dir, shop.env)
            orders = {row["pid"] for row in rows if row["service"] == "orders"}
            assert owners <= orders, (owners, orders)
            for pid in owners:
                os.kill(pid, signal.SIGKILL)
        finally:
            shop.hold.unlink()  # payments answers again
        for future in waiting:  # cut off (or, retried by the gateway, finished elsewhere)
            future.result(timeout=60)

    ids = {p: r["id"] for p, r in shop.sagas().items()}
    deadline = time.monotonic() + 60
    while True:
        orders_now = {p: shop.http.get(f"/api/orders/{ids[p]}").json() for p in ("tee", "sticker")}
        if all(o.get("status") in ("paid", "cancelled") for o in orders_now.values()):
            break
        assert time.monotonic() < deadline, orders_now
        time.sleep(0.2)

    paid, cancelled = orders_now["tee"], orders_now["sticker"]
    assert paid["status"] == "paid"
    assert paid["charge_id"] == f"ch-{ids['tee']}"
    assert cancelled["status"] == "cancelled"
    assert cancelled["reason"] is not None
    sagas = shop.sagas()
    assert sagas["tee"]["status"] == "completed"
    assert sagas["tee"]["attempts"]["charge"] >= 2  # started by the killed one, then again
    assert sagas["tee"]["attempts"]["reserve"] == 1
    assert sagas["sticker"]["status"] == "compensated"
    assert sagas["sticker"]["error"]["step"] == "charge"

    # consistent: one reservation each, one taken and one released; one charge, captured
    assert shop.stock() == before | {"tee": before["tee"] - 1}
    reservations = shop.stored("inventory", "reservation:").values()
    assert sorted(
        (r["product_id"], r["status"]) for r in reservations if r["product_id"] != "mug"
    ) == [("sticker", "released"), ("tee", "held")]
    charges = shop.stored("payments", "charge:")
    assert {k: c["status"] for k, c in charges.items()} == {f"charge:{ids['tee']}": "captured"}

    log = (shop.app_dir / ".shoal" / "logs" / "orders.log").read_text()
    for record in charging:  # taken over from the killed owner, by another process
        assert f"saga place-order {record['id']}: taken over from {record['owner']}" in log

    # the restarted instances are back; posting again answers from the stored outcomes
    restarted = [r for r in _ps(shop.app_dir, shop.env) if r["service"] == "orders"]
    assert sum(r["restarts"] for r in restarted) == len(owners), restarted
    again = shop.order("tee", 1, "crash-then-paid")
    assert (again.status_code, again.json()) == (201, paid)
    assert shop.order("sticker", 60, "crash-then-declined").status_code == 402
    assert shop.stock() == before | {"tee": before["tee"] - 1}
