"""The payments service: charges an order's total. Deterministic: no card, no randomness.

A charge above ``LIMIT_CENTS`` is declined (402), so failures can be tried on purpose.
"""

from __future__ import annotations

import os
from typing import Literal

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

INSTANCE = os.environ.get("SHOAL_INSTANCE", "payments")

LIMIT_CENTS = 20_000


class ChargeRequest(BaseModel):
    order_id: str
    amount_cents: int = Field(gt=0)


class Charge(BaseModel):
    id: str
    order_id: str
    amount_cents: int
    status: Literal["captured"]
    instance: str


app = FastAPI(title="payments")


@app.post("/charges", status_code=201)
async def charge(request: ChargeRequest) -> Charge:
    if request.amount_cents > LIMIT_CENTS:
        raise HTTPException(
            402, f"declined: {request.amount_cents} cents is over the {LIMIT_CENTS} limit"
        )
    return Charge(
        id=f"ch-{request.order_id}",  # one charge per order, whichever replica answers
        order_id=request.order_id,
        amount_cents=request.amount_cents,
        status="captured",
        instance=INSTANCE,
    )
