"""The offline risk tooling, as the ``ordermesh risk`` commands call it (found through
the ``ordermesh.risk`` entry point, so the CLI never imports this service)."""

from __future__ import annotations

from pathlib import Path

from ordermesh_payment.risk.simulate import SimulationSettings
from ordermesh_payment.risk.simulate import simulate as _simulate


def simulate(
    out: Path,
    orders: int,
    seed: int,
    days: int,
    fraud_share: float,
    chargeback_delay_days: tuple[float, float],
) -> dict[str, object]:
    settings = SimulationSettings(
        orders=orders,
        seed=seed,
        days=days,
        fraud_share=fraud_share,
        chargeback_delay_days=chargeback_delay_days,
    )
    return _simulate(settings, out)
