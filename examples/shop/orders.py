"""The orders service: places an order by asking three other services, through the mesh.

``POST /`` asks ``catalog`` for the price and ``inventory`` for a reservation at
the same time, then has ``payments`` charge the total; if anything fails after
the reservation, the reservation is released. Orders live in this process's
memory, so the manifest runs one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import shoal

INSTANCE = os.environ.get("SHOAL_INSTANCE", "orders")


class OrderRequest(BaseModel):
    product_id: str
    quantity: int = Field(default=1, ge=1, le=100)


class Order(BaseModel):
    id: str
    product_id: str
    name: str
    quantity: int
    unit_price_cents: int
    total_cents: int
    reservation_id: str
    charge_id: str
    status: Literal["paid"]
    answered_by: dict[str, str]  # service -> the instance that answered


class OrderList(BaseModel):
    orders: list[Order]
    instance: str


# What this service reads from the others' answers.
class _Product(BaseModel):
    name: str
    price_cents: int
    instance: str


class _Reservation(BaseModel):
    id: str
    instance: str


class _Charge(BaseModel):
    id: str
    instance: str


http: httpx.AsyncClient
ORDERS: dict[str, Order] = {}
_ids = itertools.count(1)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global http
    async with shoal.client() as client:
        http = client
        yield


app = FastAPI(title="orders", lifespan=lifespan)


@app.post("/", status_code=201)
async def place_order(request: OrderRequest) -> Order:
    order_id = f"ord-{next(_ids):06d}"
    found, reserved = await asyncio.gather(
        http.get(f"http://catalog/products/{request.product_id}"),
        http.post("http://inventory/reservations", json=request.model_dump()),
        return_exceptions=True,
    )
    reservation = _Reservation.model_validate(_answer(reserved, "inventory", 201))
    try:
        product = _Product.model_validate(_answer(found, "catalog", 200))
        total = product.price_cents * request.quantity
        charged = await http.post(
            "http://payments/charges", json={"order_id": order_id, "amount_cents": total}
        )
        charge = _Charge.model_validate(_answer(charged, "payments", 201))
    except Exception:
        with contextlib.suppress(httpx.HTTPError):
            await http.delete(f"http://inventory/reservations/{reservation.id}")
        raise
    order = Order(
        id=order_id,
        product_id=request.product_id,
        name=product.name,
        quantity=request.quantity,
        unit_price_cents=product.price_cents,
        total_cents=total,
        reservation_id=reservation.id,
        charge_id=charge.id,
        status="paid",
        answered_by={
            "orders": INSTANCE,
            "catalog": product.instance,
            "inventory": reservation.instance,
            "payments": charge.instance,
        },
    )
    ORDERS[order.id] = order
    logging.getLogger(__name__).info("order %s placed", order.id)  # tied to its trace
    return order


@app.get("/")
async def list_orders() -> OrderList:
    return OrderList(orders=list(ORDERS.values()), instance=INSTANCE)


@app.get("/{order_id}")
async def get_order(order_id: str) -> Order:
    order = ORDERS.get(order_id)
    if order is None:
        raise HTTPException(404, f"no order {order_id!r}")
    return order


def _answer(result: httpx.Response | BaseException, service: str, expected: int) -> Any:
    """The JSON of a call that went as ``expected``; else an HTTPException that says why."""
    if isinstance(result, httpx.TransportError):  # e.g. shoal.NoEndpointsError
        raise HTTPException(503, f"{service} is unavailable: {result}")
    if isinstance(result, BaseException):
        raise result
    if result.status_code == expected:
        return result.json()
    try:
        detail = result.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = result.text
    status = result.status_code if 400 <= result.status_code < 500 else 502
    raise HTTPException(status, f"{service}: {detail}")
