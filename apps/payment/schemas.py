"""What payment's operations take and answer: validated on the way in (the card rules included), and its OpenAPI
document."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from shoplib.api import Body, Query, matching

from . import cards

ORDER_ID = r"^[A-Za-z0-9_-]{1,64}$"
Currency = Literal["USD", "EUR", "GBP"]


class CardDetails(Body):
    number: str = matching(r"^[0-9][0-9 -]{10,21}[0-9]$", "12-19 digits, spaces or dashes allowed")
    expiry: str = matching(r"^(0[1-9]|1[0-2])/[0-9]{2}$", "MM/YY")
    cvc: str = matching(r"^[0-9]{3,4}$", "3 or 4 digits")

    @field_validator("number")
    @classmethod
    def _real_card_number(cls, number: str) -> str:
        digits = cards.normalize_number(number)
        if not 12 <= len(digits) <= 19 or not digits.isdigit():
            raise PydanticCustomError("card_digits", "must be 12-19 digits")
        if not cards.luhn_valid(digits):
            raise PydanticCustomError("card_luhn", "is not a valid card number (Luhn check failed)")
        return digits

    @field_validator("expiry")
    @classmethod
    def _not_expired(cls, expiry: str) -> str:
        if problem := cards.expiry_problem(expiry, date.today()):
            raise PydanticCustomError("card_expiry", problem)
        return expiry


class PaymentRequest(Body):
    order_id: str = matching(ORDER_ID, "1-64 letters, digits, _ and -")
    amount: float = Field(ge=0.01, le=1_000_000, description="at most two decimal places")
    currency: Currency
    card: CardDetails

    @field_validator("amount")
    @classmethod
    def _whole_cents(cls, amount: float) -> float:
        cents = Decimal(str(amount)) * 100
        if cents != cents.to_integral_value():
            raise PydanticCustomError("amount_cents", "must have at most two decimal places")
        return amount

    @property
    def amount_cents(self) -> int:
        return int(Decimal(str(self.amount)) * 100)


class PaymentLookup(Query):
    order_id: str = matching(ORDER_ID, "1-64 letters, digits, _ and -")


class CardSummary(BaseModel):
    brand: str
    last4: str


class Payment(BaseModel):
    payment_id: str
    order_id: str
    status: Literal["pending", "captured", "declined"]
    amount: float
    currency: str
    card: CardSummary
    reason: str | None = Field(None, description="why the card was declined")
