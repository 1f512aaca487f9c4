"""What payment risk scoring costs PlaceOrder: a small model trained on simulated data
and registered as payment's champion, then the same closed loop with risk on and off,
placing the simulated log's orders.

The model comes from the ``ordermesh risk`` tooling (found through payment's entry
point, as the CLI finds it), so the bench imports no service."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from ordermesh_bench.costs import samples
from ordermesh_cli.risk import load_risk_tools
from ordermesh_cli.simulated_orders import SimulatedOrders

SCORING_HISTOGRAM = "ordermesh_risk_scoring_duration_seconds"
# Small and quick to train, yet with enough matured chargebacks for the trees to learn
# from: a month of orders, 5% fraud, labels within 3 to 10 days.
SIMULATED_ORDERS = 3000
SIMULATED_DAYS = 30
FRAUD_SHARE = 0.05
CHARGEBACK_DAYS = (3.0, 10.0)


def simulated_orders(folder: Path) -> SimulatedOrders:
    """The orders of the log the champion was trained on (``train_champion``'s
    folder): what the risk runs place."""
    return SimulatedOrders.read(folder / "sim")


def train_champion(folder: Path, payment_database_url: str) -> str:
    """Simulate, train, and register the trees as payment's champion; their version."""
    tools = load_risk_tools()
    tools.simulate(folder / "sim", SIMULATED_ORDERS, 7, SIMULATED_DAYS, FRAUD_SHARE,
                   CHARGEBACK_DAYS)  # fmt: skip
    tools.train(folder / "sim", folder / "models", None, None, CHARGEBACK_DAYS[1])
    registered = tools.register(payment_database_url, folder / "models" / "lightgbm.json", True)
    return str(registered["version"])


async def train_champion_off_loop(folder: Path, payment_database_url: str) -> str:
    # The tools run their own event loops (and train on the CPU): off this one.
    return await asyncio.to_thread(train_champion, folder, payment_database_url)


def champion_decided(metrics_port: int) -> bool:
    """Whether payment's champion model has decided a payment since the process started
    (``ordermesh_risk_decisions_total{variant="champion"}``): the registry was read and
    the model loaded, so a run measures the model, not the rules standing in for it.
    False while payment's metrics do not answer yet."""
    try:
        found = samples(metrics_port)
    except OSError:
        return False
    return any(
        s.name == "ordermesh_risk_decisions_total"
        and s.labels.get("variant") == "champion"
        and s.value > 0
        for s in found
    )


def scoring_histogram(metrics_port: int) -> dict[str, dict[float, float]]:
    """Per source (model, rules): cumulative batch counts by upper bound (seconds)."""
    buckets: dict[str, dict[float, float]] = {}
    for s in samples(metrics_port):
        if s.name == f"{SCORING_HISTOGRAM}_bucket":
            buckets.setdefault(s.labels["source"], {})[float(s.labels["le"])] = s.value
    return buckets


def merge(histograms: list[dict[float, float]]) -> dict[float, float]:
    total: dict[float, float] = {}
    for histogram in histograms:
        for bound, count in histogram.items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def percentile_ms(histogram: dict[float, float], share: float) -> float | None:
    """The upper bound of the bucket the ``share`` quantile falls in, in ms (a bucket's
    bound: the histogram knows no finer); None with no batch, or past the last bound."""
    if not histogram or histogram.get(math.inf, 0.0) == 0:
        return None
    wanted = share * histogram[math.inf]
    for bound in sorted(histogram):
        if histogram[bound] >= wanted:
            return None if bound == math.inf else round(bound * 1000, 3)
    return None


def scoring_summary(by_source: list[dict[str, dict[float, float]]]) -> dict[str, Any]:
    """Batches scored by each source and the model's p99 per batch, over the runs."""
    sources = sorted({source for run in by_source for source in run})
    merged = {source: merge([run.get(source, {}) for run in by_source]) for source in sources}
    return {
        "batches_by_source": {s: int(h.get(math.inf, 0.0)) for s, h in merged.items()},
        "model_p99_ms_per_batch": percentile_ms(merged.get("model", {}), 0.99),
        "model_p50_ms_per_batch": percentile_ms(merged.get("model", {}), 0.50),
    }
