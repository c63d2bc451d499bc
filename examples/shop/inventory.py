"""The inventory service: stock per product, and reservations against it.

Stock and reservations live in the service's state (``shoal.state()``), so every
replica sees the same numbers: a reservation is one transaction that takes the stock
with the ETag it read, and starts over if another replica changed it meanwhile.
A reservation made with an ``Idempotency-Key`` header is made once per key; releasing
one twice releases it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal, TypeVar

from fastapi import FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, Field

import shoal
from shoal.state import Transaction

INSTANCE = os.environ.get("SHOAL_INSTANCE", "inventory")
INITIAL_STOCK = {"mug": 25, "tee": 10, "tote": 5, "sticker": 100}
T = TypeVar("T")


class Stock(BaseModel):
    product_id: str
    available: int
    instance: str


class StockList(BaseModel):
    stock: dict[str, int]
    instance: str


class ReservationRequest(BaseModel):
    product_id: str
    quantity: int = Field(ge=1)


class Reservation(BaseModel):
    id: str
    product_id: str
    quantity: int
    status: Literal["held", "released"]
    instance: str  # the replica that made it


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async def stock_the_shelves(tx: Transaction) -> None:
        # The first start of the app fills them, once: a create-only write, so a replica
        # starting later never puts back stock that orders have taken.
        if await tx.get("stock") is None:
            tx.set("stock", INITIAL_STOCK, absent=True)

    await _atomically(stock_the_shelves)
    yield


app = FastAPI(title="inventory", lifespan=lifespan)


@app.get("/stock")
async def list_stock() -> StockList:
    return StockList(stock=await shoal.state().get("stock"), instance=INSTANCE)


@app.get("/stock/{product_id}")
async def get_stock(product_id: str) -> Stock:
    stock = await shoal.state().get("stock")
    if product_id not in stock:
        raise HTTPException(404, f"no stock is kept for {product_id!r}")
    return Stock(product_id=product_id, available=stock[product_id], instance=INSTANCE)


@app.post("/reservations", status_code=201)
async def reserve(
    request: ReservationRequest, idempotency_key: str | None = Header(default=None)
) -> Reservation:
    if idempotency_key:  # the same key always names the same reservation
        reservation_id = "res-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:16]
    else:
        reservation_id = "res-" + secrets.token_hex(8)

    async def take(tx: Transaction) -> Reservation:
        made = await tx.get(f"reservation:{reservation_id}")
        if made is not None:
            return Reservation.model_validate(made)  # a repeat: made before
        stock = await tx.get_item("stock")
        available = None if stock is None else stock.value.get(request.product_id)
        if stock is None or available is None:
            raise HTTPException(404, f"no stock is kept for {request.product_id!r}")
        if available < request.quantity:
            raise HTTPException(
                409, f"only {available} of {request.product_id!r} left, {request.quantity} asked"
            )
        left = stock.value | {request.product_id: available - request.quantity}
        reservation = Reservation(
            id=reservation_id, **request.model_dump(), status="held", instance=INSTANCE
        )
        tx.set("stock", left, etag=stock.etag)
        tx.set(f"reservation:{reservation_id}", reservation.model_dump())
        return reservation

    return await _atomically(take)


@app.delete("/reservations/{reservation_id}", status_code=204)
async def release(reservation_id: str) -> Response:
    async def put_back(tx: Transaction) -> None:
        found = await tx.get_item(f"reservation:{reservation_id}")
        if found is None:
            raise HTTPException(404, f"no reservation {reservation_id!r}")
        reservation = Reservation.model_validate(found.value)
        if reservation.status == "released":
            return  # released before: once is enough
        stock = await tx.get_item("stock")
        if stock is None:
            raise HTTPException(404, "no stock is kept")
        count = stock.value[reservation.product_id] + reservation.quantity
        tx.set("stock", stock.value | {reservation.product_id: count}, etag=stock.etag)
        released = reservation.model_copy(update={"status": "released"})
        tx.set(f"reservation:{reservation_id}", released.model_dump(), etag=found.etag)

    await _atomically(put_back)
    return Response(status_code=204)


async def _atomically(change: Callable[[Transaction], Awaitable[T]]) -> T:
    """``change`` in one transaction, started over while another replica's write wins."""
    for attempt in range(100):
        try:
            async with shoal.state().transaction() as tx:
                return await change(tx)
        except shoal.ConcurrencyError:
            await asyncio.sleep(0.001 * attempt)
    raise HTTPException(503, "inventory is too busy right now; try again")
