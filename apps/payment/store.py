"""One payment per order: the row is claimed before the gateway is called, so nothing is charged twice."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from shoplib.db import Database, must_exist, utc_timestamp


class PaymentStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def migrate(self) -> None:
        self.db.execute(
            "payments.create_table",
            """CREATE TABLE IF NOT EXISTS payments (
                id TEXT PRIMARY KEY,
                order_id TEXT NOT NULL UNIQUE,
                amount_cents INTEGER NOT NULL,
                currency TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'captured', 'declined')),
                decline_reason TEXT,
                card_brand TEXT NOT NULL,
                card_last4 TEXT NOT NULL,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        )
        # The customer whose order it pays (checkout acts for them); NULL on payments from before.
        self.db.add_column("payments", "owner", "TEXT")

    def claim(
        self, order_id: str, amount_cents: int, currency: str, brand: str, last4: str, *, owner: str
    ) -> tuple[dict[str, Any], bool]:
        """Insert a pending payment for the order, or return the one already there. Returns (row, claimed)."""
        payment_id = "pay_" + uuid.uuid4().hex
        now = utc_timestamp()
        try:
            self.db.execute(
                "payments.claim",
                "INSERT INTO payments (id, order_id, amount_cents, currency, status, card_brand, card_last4, "
                "owner, created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (payment_id, order_id, amount_cents, currency, brand, last4, owner, now, now),
            )
            claimed = True
        except sqlite3.IntegrityError:
            claimed = False
        return must_exist(self.get_by_order(order_id), f"the payment of order {order_id}"), claimed

    def finish(self, payment_id: str, status: str, reason: str | None) -> dict[str, Any]:
        self.db.execute(
            "payments.finish",
            "UPDATE payments SET status = ?, decline_reason = ?, updated_at = ? WHERE id = ?",
            (status, reason, utc_timestamp(), payment_id),
        )
        return must_exist(self.get_by_id(payment_id), f"payment {payment_id}")

    def void_unfinished(self) -> list[dict[str, Any]]:
        """Remove the payments left pending by a process that died mid-payment, and return them. Only for start-up:
        a payment is pending only while its request runs, and the gateway call of that request died with it (the
        simulated gateway is in this process), so nothing was taken; removed, the order can be paid again."""
        rows = self.db.execute("payments.list_pending", "SELECT * FROM payments WHERE status = 'pending'")
        for row in rows:
            self.abandon(row["id"])
        return [dict(row) for row in rows]

    def abandon(self, payment_id: str) -> None:
        """Forget a pending claim whose gateway call failed, so the order can be paid on retry."""
        self.db.execute("payments.abandon", "DELETE FROM payments WHERE id = ? AND status = 'pending'", (payment_id,))

    def get_by_order(self, order_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("payments.get_by_order", "SELECT * FROM payments WHERE order_id = ?", (order_id,))
        return dict(rows[0]) if rows else None

    def get_by_id(self, payment_id: str) -> dict[str, Any] | None:
        rows = self.db.execute("payments.get", "SELECT * FROM payments WHERE id = ?", (payment_id,))
        return dict(rows[0]) if rows else None
