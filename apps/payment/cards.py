"""Card checks. Only the last four digits ever leave this module's callers."""

from __future__ import annotations

import re
from datetime import date

_EXPIRY = re.compile(r"(0[1-9]|1[0-2])/([0-9]{2})")

# Test cards as every developer knows them (Stripe's numbers); any other valid card approves.
DECLINING_TEST_CARDS = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000127": "incorrect_cvc",
}


def normalize_number(number: str) -> str:
    return number.replace(" ", "").replace("-", "")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def expiry_problem(expiry: str, today: date) -> str | None:
    """Why an "MM/YY" expiry is unusable, or None; a card is valid through the end of its month."""
    match = _EXPIRY.fullmatch(expiry)
    if match is None:
        return "must be MM/YY"
    month, year = int(match.group(1)), 2000 + int(match.group(2))
    if (year, month) < (today.year, today.month):
        return "the card has expired"
    return None


def brand(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in {"51", "52", "53", "54", "55"} or "2221" <= digits[:4] <= "2720":
        return "mastercard"
    if digits[:2] in {"34", "37"}:
        return "amex"
    return "other"


def decline_reason(digits: str) -> str | None:
    return DECLINING_TEST_CARDS.get(digits)
