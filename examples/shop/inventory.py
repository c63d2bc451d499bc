"""The inventory service: stock per product, and reservations against it.

Stock lives in this process's memory, so the manifest runs one replica.
"""

from __future__ import annotations

import itertools
import os

from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

INSTANCE = os.environ.get("SHOAL_INSTANCE", "inventory")

STOCK: dict[str, int] = {"mug": 25, "tee": 10, "tote": 5, "sticker": 100}


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
    instance: str


RESERVATIONS: dict[str, Reservation] = {}
_ids = itertools.count(1)

app = FastAPI(title="inventory")


@app.get("/stock")
async def list_stock() -> StockList:
    return StockList(stock=STOCK, instance=INSTANCE)


@app.get("/stock/{product_id}")
async def get_stock(product_id: str) -> Stock:
    if product_id not in STOCK:
        raise HTTPException(404, f"no stock is kept for {product_id!r}")
    return Stock(product_id=product_id, available=STOCK[product_id], instance=INSTANCE)


@app.post("/reservations", status_code=201)
async def reserve(request: ReservationRequest) -> Reservation:
    available = STOCK.get(request.product_id)
    if available is None:
        raise HTTPException(404, f"no stock is kept for {request.product_id!r}")
    if available < request.quantity:
        raise HTTPException(
            409, f"only {available} of {request.product_id!r} left, {request.quantity} asked"
        )
    STOCK[request.product_id] = available - request.quantity
    reservation = Reservation(
        id=f"res-{next(_ids):06d}",
        product_id=request.product_id,
        quantity=request.quantity,
        instance=INSTANCE,
    )
    RESERVATIONS[reservation.id] = reservation
    return reservation


@app.delete("/reservations/{reservation_id}", status_code=204)
async def release(reservation_id: str) -> Response:
    reservation = RESERVATIONS.pop(reservation_id, None)
    if reservation is None:
        raise HTTPException(404, f"no reservation {reservation_id!r}")
    STOCK[reservation.product_id] += reservation.quantity
    return Response(status_code=204)
