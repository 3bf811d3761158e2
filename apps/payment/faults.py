"""payment's own faults: a card gateway that fails a share of authorizations."""

from __future__ import annotations

from shoplib.faults import Fault, Param

from .gateway import Gateway


def payment_faults(gateway: Gateway) -> list[Fault]:
    def fail_share(params: dict[str, float]) -> None:
        gateway.failure_rate = params["rate"]

    def recover() -> None:
        gateway.failure_rate = 0.0

    return [
        Fault(
            "gateway_errors",
            "The card gateway fails a share (`rate`) of authorizations: the payment error spike.",
            (Param("rate", float, 0, 1),),
            activate=fail_share,
            deactivate=recover,
        )
    ]
