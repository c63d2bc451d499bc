"""The catalog service: what the shop sells, at what price, and how many have sold.

``sold`` counts the ``orders.paid`` events that orders publishes through its outbox.
The handler is idempotent: its count and a marker of the event commit together, so
a redelivered event is counted once.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

import shoal
from shoal.state import Transaction

INSTANCE = os.environ.get("SHOAL_INSTANCE", "catalog")


class Product(BaseModel):
    id: str
    name: str
    price_cents: int


class ProductList(BaseModel):
    products: list[Product]
    instance: str


class ProductDetail(Product):
    sold: int
    instance: str


PRODUCTS = {
    product.id: product
    for product in (
        Product(id="mug", name="Enamel mug", price_cents=1200),
        Product(id="tee", name="Shoal T-shirt", price_cents=2500),
        Product(id="tote", name="Canvas tote bag", price_cents=1800),
        Product(id="sticker", name="Sticker pack", price_cents=400),
    )
}

app = FastAPI(title="catalog")


@app.get("/products")
async def list_products() -> ProductList:
    return ProductList(products=list(PRODUCTS.values()), instance=INSTANCE)


@app.get("/products/{product_id}")
async def get_product(product_id: str) -> ProductDetail:
    product = PRODUCTS.get(product_id)
    if product is None:
        raise HTTPException(404, f"no product {product_id!r} in the catalog")
    sold = await shoal.state().get(f"sold:{product_id}") or 0
    return ProductDetail(**product.model_dump(), sold=sold, instance=INSTANCE)


@shoal.subscribe("orders.paid", idempotent=True)
async def count_sale(event: shoal.Event, tx: Transaction) -> None:
    key = f"sold:{event.data['product_id']}"
    item = await tx.get_item(key)
    if item is None:  # the first sale: create-only, so two replicas cannot both start at 0
        tx.set(key, event.data["quantity"], absent=True)
    else:
        tx.set(key, item.value + event.data["quantity"], etag=item.etag)
