"""The orders service: places an order as a saga across three services, through the mesh.

``POST /`` runs the ``place-order`` saga, whose progress is stored in this service's
state before each next step, so that another instance (or this one, restarted) finishes
an order whose instance stopped mid-way:

    open      ask catalog for the price; store the order as pending   undo: cancel it
    reserve   have inventory reserve the stock                        undo: release it
    charge    have payments charge the total                          undo: refund it
    confirm   store the order as paid, and the event ``orders.paid`` in the same commit
              (the outbox: catalog counts what sold, whatever crashes in between)

A declined payment (over 200.00) releases the reservation and cancels the order. Each
call carries the step's idempotency key, so a repeated step is recognised by the
service that gets it. With an ``Idempotency-Key`` header, posting the same order again
returns the first answer instead of placing a second order.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

import shoal

INSTANCE = os.environ.get("SHOAL_INSTANCE", "orders")
log = logging.getLogger("orders")


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
    reservation_id: str | None = None
    charge_id: str | None = None
    status: Literal["pending", "paid", "cancelled"]
    reason: str | None = None  # why it was cancelled
    answered_by: dict[str, str]  # service -> the instance that answered


class OrderList(BaseModel):
    orders: list[Order]
    instance: str


class Refused(Exception):
    """A service said no (or could not be reached): its status and reason."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


http: httpx.AsyncClient


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    global http
    async with shoal.client() as client:
        http = client
        yield


app = FastAPI(title="orders", lifespan=lifespan)


# -- the saga's steps: each gets the saga's context, returns what later steps need ----


async def open_order(ctx: shoal.SagaContext) -> dict[str, Any]:
    product = await _call("GET", f"http://catalog/products/{ctx.data['product_id']}")
    order = Order(
        id=ctx.id,
        product_id=ctx.data["product_id"],
        name=product["name"],
        quantity=ctx.data["quantity"],
        unit_price_cents=product["price_cents"],
        total_cents=product["price_cents"] * ctx.data["quantity"],
        status="pending",
        answered_by={"catalog": product["instance"]},
    )
    await shoal.state().set(f"order:{ctx.id}", order.model_dump())
    return order.model_dump()


async def cancel_order(ctx: shoal.SagaContext) -> None:
    reason = ctx.error.message if ctx.error else None
    order = Order.model_validate(ctx.result).model_copy(
        update={"status": "cancelled", "reason": reason}
    )
    await shoal.state().set(f"order:{ctx.id}", order.model_dump())


async def reserve(ctx: shoal.SagaContext) -> Any:
    wanted = {"product_id": ctx.data["product_id"], "quantity": ctx.data["quantity"]}
    return await _call("POST", "http://inventory/reservations", ctx, json=wanted)


async def release(ctx: shoal.SagaContext) -> None:
    await _call("DELETE", f"http://inventory/reservations/{ctx.result['id']}", ctx)


async def charge(ctx: shoal.SagaContext) -> Any:
    total = ctx.results["open"]["total_cents"]
    wanted = {"order_id": ctx.id, "amount_cents": total}
    return await _call("POST", "http://payments/charges", ctx, json=wanted)


async def refund(ctx: shoal.SagaContext) -> None:
    await _call("POST", f"http://payments/charges/{ctx.result['id']}/refund", ctx)


async def confirm(ctx: shoal.SagaContext) -> dict[str, Any]:
    opened, reservation, charged = (ctx.results[s] for s in ("open", "reserve", "charge"))
    order = Order.model_validate(opened).model_copy(
        update={
            "reservation_id": reservation["id"],
            "charge_id": charged["id"],
            "status": "paid",
            "answered_by": opened["answered_by"]
            | {
                "orders": INSTANCE,
                "inventory": reservation["instance"],
                "payments": charged["instance"],
            },
        }
    )
    async with shoal.state().transaction() as tx:  # the order and its event: one commit
        stored = await tx.get(f"order:{ctx.id}")
        tx.set(f"order:{ctx.id}", order.model_dump())
        if stored is None or stored["status"] != "paid":  # a repeated step publishes nothing
            paid = {"order": ctx.id, "product_id": order.product_id, "quantity": order.quantity}
            tx.publish("orders.paid", paid, key=ctx.id)
    return order.model_dump()


place_order = shoal.Saga(
    "place-order",
    [
        shoal.Step("open", open_order, compensate=cancel_order),
        shoal.Step("reserve", reserve, compensate=release),
        shoal.Step("charge", charge, compensate=refund),
        shoal.Step("confirm", confirm),
    ],
    lease=5.0,  # a stopped instance's orders are taken up by another within seconds
)


# -- the API ------------------------------------------------------------------------


@app.post("/", status_code=201)
async def create_order(
    request: OrderRequest, idempotency_key: str | None = Header(default=None)
) -> Order:
    if idempotency_key:  # the same key always names the same order
        order_id = "ord-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    else:
        order_id = "ord-" + secrets.token_hex(8)
    try:
        outcome = await place_order.run(order_id, request.model_dump())
    except shoal.SagaError as exc:  # could not be undone, or the key was used for another
        raise HTTPException(500 if exc.outcome else 409, str(exc)) from exc
    if outcome.error is not None:  # compensated: say why, with the status it came with
        raise HTTPException(outcome.error.status or 500, outcome.error.message)
    log.info("order %s placed", order_id)  # tied to its trace
    return Order.model_validate(outcome.results["confirm"])


@app.get("/")
async def list_orders() -> OrderList:
    found = await shoal.state().list("order:")
    return OrderList(orders=[Order.model_validate(v) for _, v in found], instance=INSTANCE)


@app.get("/{order_id}")
async def get_order(order_id: str) -> Order:
    order = await shoal.state().get(f"order:{order_id}")
    if order is None:
        raise HTTPException(404, f"no order {order_id!r}")
    return Order.model_validate(order)


async def _call(method: str, url: str, ctx: shoal.SagaContext | None = None, **kwargs: Any) -> Any:
    """One call through the mesh, with the step's idempotency key; its JSON if it went
    well, else Refused saying why (with the status to answer with)."""
    service = httpx.URL(url).host
    headers = {"idempotency-key": ctx.idempotency_key} if ctx else {}
    try:
        result = await http.request(method, url, headers=headers, **kwargs)
    except httpx.TransportError as exc:  # e.g. shoal.NoEndpointsError
        raise Refused(503, f"{service} is unavailable: {exc}") from exc
    if result.is_success:
        return result.json() if result.content else None
    try:
        detail = result.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = result.text
    status = result.status_code if 400 <= result.status_code < 500 else 502
    raise Refused(status, f"{service}: {detail}")
