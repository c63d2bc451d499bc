"""The catalog service: what the shop sells, at what price."""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

INSTANCE = os.environ.get("SHOAL_INSTANCE", "catalog")


class Product(BaseModel):
    id: str
    name: str
    price_cents: int


class ProductList(BaseModel):
    products: list[Product]
    instance: str


class ProductDetail(Product):
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
    return ProductDetail(**product.model_dump(), instance=INSTANCE)
