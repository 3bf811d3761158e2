"""What checkout's operations take and answer: validated on the way in, and its OpenAPI document."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from shoplib.api import Body, Header
from shoplib.order_lines import OrderLines

ORDER_ID = r"^[0-9a-f]{32}$"
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,128}$"  # visible ASCII, as HTTP header values allow

IDEMPOTENCY_HEADER = Header(
    "Idempotency-Key",
    "1-128 visible ASCII characters, new for each order: a retry with the same key never charges twice",
    IDEMPOTENCY_KEY,
)


class CardEntry(Body):
    """Shape only: payment owns the card rules (Luhn, expiry) and answers 400 with the field named."""

    number: str = Field(min_length=1, max_length=23)
    expiry: str = Field(min_length=1, max_length=5)
    cvc: str = Field(min_length=1, max_length=4)

    @property
    def digits(self) -> str:
        return "".join(ch for ch in self.number if ch.isdigit())

    @property
    def last4(self) -> str:
        return self.digits[-4:]


class OrderRequest(OrderLines):
    card: CardEntry


class OrderPath(BaseModel):
    order_id: str = Field(pattern=ORDER_ID)


class OrderedItem(BaseModel):
    product_id: int
    quantity: int
    name: str | None = None
    unit_price: float | None = None


class PaidOrder(BaseModel):
    order_id: str
    status: Literal["paid"]
    total: float
    currency: str
    items: list[OrderedItem]
    payment_id: str


class Order(BaseModel):
    order_id: str
    status: Literal["pending", "paid", "declined", "rejected", "failed"]
    total: float | None
    currency: str | None
    items: list[OrderedItem]
    payment_id: str | None
    created_at: str


class OrderPage(BaseModel):
    items: list[Order]
    total: int
    limit: int
    offset: int
