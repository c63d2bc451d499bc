"""The payments service: charges an order's total. Deterministic: no card, no randomness.

The rule: a charge above ``LIMIT_CENTS`` (200.00) is declined with 402, so a failing
payment can be tried on purpose. A charge is kept in the service's state under its
order, so charging one order twice charges it once, and any replica can refund it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import shoal

INSTANCE = os.environ.get("SHOAL_INSTANCE", "payments")
LIMIT_CENTS = 20_000
HOLD = os.environ.get("SHOP_HOLD_CHARGES")
"""For tests: while the file this names exists, charges wait (a slow payment provider)."""


class ChargeRequest(BaseModel):
    order_id: str
    amount_cents: int = Field(gt=0)


class Charge(BaseModel):
    id: str
    order_id: str
    amount_cents: int
    status: Literal["captured", "refunded"]
    instance: str  # the replica that captured it


app = FastAPI(title="payments")


@app.post("/charges", status_code=201)
async def charge(request: ChargeRequest) -> Charge:
    await _provider_delay()
    if request.amount_cents > LIMIT_CENTS:
        raise HTTPException(
            402, f"declined: {request.amount_cents} cents is over the {LIMIT_CENTS} limit"
        )
    store = shoal.state()
    key = f"charge:{request.order_id}"
    captured = Charge(
        id=f"ch-{request.order_id}",  # one charge per order, whichever replica answers
        order_id=request.order_id,
        amount_cents=request.amount_cents,
        status="captured",
        instance=INSTANCE,
    )
    try:
        await store.set(key, captured.model_dump(), absent=True)
    except shoal.ConcurrencyError:  # charged before (a retry, or another replica): the same
        made = await store.get(key)
        if made is None or made["amount_cents"] != request.amount_cents:
            raise HTTPException(
                409, f"order {request.order_id!r} was charged another amount"
            ) from None
        return Charge.model_validate(made)
    return captured


@app.post("/charges/{charge_id}/refund")
async def refund(charge_id: str) -> Charge:
    store = shoal.state()
    key = f"charge:{charge_id.removeprefix('ch-')}"
    found = await store.get(key)
    if found is None:
        raise HTTPException(404, f"no charge {charge_id!r}")
    refunded = Charge.model_validate(found).model_copy(update={"status": "refunded"})
    await store.set(key, refunded.model_dump())
    return refunded


async def _provider_delay() -> None:
    if not HOLD:
        return
    for _ in range(1200):  # a minute at most
        if not await asyncio.to_thread(Path(HOLD).exists):
            return
        await asyncio.sleep(0.05)
