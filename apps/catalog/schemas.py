"""What catalog's operations take and answer: validated on the way in, and its OpenAPI document."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from shoplib.api import Paging, matching
from shoplib.order_lines import OrderLines
from shoplib.validation import MAX_ID

REFERENCE = r"^[A-Za-z0-9_.:-]{1,100}$"
RESERVATION_ID = r"^[0-9a-f]{32}$"
SearchText = Annotated[str, Field(max_length=100)]


class ProductSearch(Paging):
    q: SearchText = Field("", description="words in the name or description")
    category: SearchText = Field("", description="only this category")


class ProductPath(BaseModel):
    product_id: int = Field(ge=0, le=MAX_ID)


class ReservationPath(BaseModel):
    reservation_id: str = Field(pattern=RESERVATION_ID)


class ReferencePath(BaseModel):
    reference: str = Field(pattern=REFERENCE)


class ReservationRequest(OrderLines):
    reference: str = matching(REFERENCE, "1-100 letters, digits, . _ : - (the order it is for)")


class Product(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    category: str
    price: float
    currency: str
    stock: int


class ProductPage(BaseModel):
    items: list[Product]
    total: int
    limit: int
    offset: int


class ReservedLine(BaseModel):
    product_id: int
    name: str
    quantity: int
    unit_price: float
    unit_price_cents: int


class Reservation(BaseModel):
    reservation_id: str
    reference: str
    owner: str | None
    status: str
    items: list[ReservedLine]
    total: float
    total_cents: int
    currency: str
