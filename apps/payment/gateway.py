"""A simulated card gateway: network-like latency, test-card declines, and a share of failed calls
(`failure_rate`, which the gateway_errors fault turns up)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from shoplib.errors import Problem

from .cards import decline_reason

_tracer = trace.get_tracer(__name__)


@dataclass(frozen=True)
class Authorization:
    approved: bool
    reason: str | None = None


class Gateway:
    def __init__(self, latency_ms: int) -> None:
        self.latency_ms = latency_ms
        self.failure_rate = 0.0

    def authorize(
        self, digits: str, amount_cents: int, currency: str, client_failure_rate: float = 0.0
    ) -> Authorization:
        """Raises a 502 problem when the gateway fails (a `failure_rate` share of calls) or the release's client
        loses the call (a `client_failure_rate` share)."""
        with _tracer.start_as_current_span("gateway authorize", kind=trace.SpanKind.CLIENT) as span:
            span.set_attributes({"payment.amount_cents": amount_cents, "payment.currency": currency})
            # Half to one-and-a-half times the configured latency, like a real network hop.
            time.sleep(self.latency_ms * random.uniform(0.5, 1.5) / 1000)
            injected = random.random() < self.failure_rate
            if injected or random.random() < client_failure_rate:
                span.set_status(Status(StatusCode.ERROR, "gateway error"))
                if injected:
                    span.set_attribute("shop.fault.injected", "gateway_errors")
                raise Problem(
                    502,
                    "Payment gateway error",
                    "The card gateway failed to answer; no money was taken.",
                    kind="gateway-error",
                )
            reason = decline_reason(digits)
            span.set_attribute("payment.outcome", "declined" if reason else "approved")
            return Authorization(approved=reason is None, reason=reason)
