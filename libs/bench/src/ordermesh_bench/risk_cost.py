"""What payment risk scoring costs PlaceOrder: a small model trained on simulated data
and registered as payment's champion, then the same closed loop with risk on and off,
placing the simulated log's orders.

The model comes from the ``ordermesh risk`` tooling (found through payment's entry
point, as the CLI finds it), so the bench imports no service."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ordermesh_bench.costs import samples
from ordermesh_cli.risk import load_risk_tools
from ordermesh_cli.simulated_orders import SimulatedOrders
from ordermesh_messaging.events import TOPICS

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


# The champion's decline threshold in the bench: above any score, so that it scores and
# logs every payment and declines none. The bench replays a month of each customer's
# orders within minutes, so the velocity features climb with every pass through the log
# and the trained threshold declined 37%, 64% and 78% of the orders of three successive
# runs: their compensations (stock released, payment voided, a rejection event) then
# weighed on risk on, not the scoring. Both sides now confirm the same orders.
NEVER_DECLINES = 2.0


def train_champion(folder: Path, payment_database_url: str) -> str:
    """Simulate, train, and register the trees as payment's champion (declining none,
    see ``NEVER_DECLINES``); their version."""
    tools = load_risk_tools()
    tools.simulate(folder / "sim", SIMULATED_ORDERS, 7, SIMULATED_DAYS, FRAUD_SHARE,
                   CHARGEBACK_DAYS)  # fmt: skip
    models = folder / "models"
    tools.train(folder / "sim", models, None, None, CHARGEBACK_DAYS[1])
    tools.with_threshold(models / "lightgbm.json", NEVER_DECLINES, models / "scoring-only.json")
    registered = tools.register(payment_database_url, models / "scoring-only.json", True)
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


# The payment events payment's own consumer reads for the features (risk on only).
PAYMENT_EVENTS_TOPIC = TOPICS["payment"]
# Caught up: within this many events of the newest (a warm-up keeps a few in flight).
CAUGHT_UP_EVENTS = 100


def payment_events_behind(found: Sequence[Any], partitions: int) -> float | None:
    """How far payment's consumer is behind the payment events, from its
    ``ordermesh_consumer_lag`` samples; None until it has polled every one of the
    topic's ``partitions``. A partition's gauge appears with its first polled records:
    summed over the first partitions to answer, a backlog on the others looked like
    none, and the runs with risk on measured the consumer reading it."""
    lags = {
        s.labels.get("partition"): s.value
        for s in found
        if s.name == "ordermesh_consumer_lag" and s.labels.get("topic") == PAYMENT_EVENTS_TOPIC
    }
    return sum(lags.values()) if len(lags) >= partitions else None


def features_caught_up(metrics_port: int, partitions: int) -> bool:
    """Whether payment's consumer has caught up with the payment events. Restarted with
    risk on, it first reads every payment event published while risk was off (its
    group's offsets stayed where risk was last on): a run started before it is done
    measures that catch-up, not what scoring costs. False while metrics do not answer."""
    try:
        behind = payment_events_behind(samples(metrics_port), partitions)
    except OSError:
        return False
    return behind is not None and behind <= CAUGHT_UP_EVENTS


def decisions(metrics_port: int) -> dict[str, float]:
    """Payment's risk decisions since it started, by decision (approve, decline,
    explore), summed over the variants."""
    found: dict[str, float] = {}
    for s in samples(metrics_port):
        if s.name == "ordermesh_risk_decisions_total":
            decision = s.labels["decision"]
            found[decision] = found.get(decision, 0.0) + s.value
    return found


def declined_share(before: dict[str, float], after: dict[str, float]) -> float | None:
    """The share of the decisions between two reads that declined; None without any."""
    made = {k: v - before.get(k, 0.0) for k, v in after.items()}
    total = sum(made.values())
    return round(made.get("decline", 0.0) / total, 4) if total else None


def scoring_histogram(metrics_port: int) -> dict[str, dict[float, float]]:
    """Per source (model, rules): cumulative batch counts by upper bound (seconds)."""
    buckets: dict[str, dict[float, float]] = {}
    for s in samples(metrics_port):
        if s.name == f"{SCORING_HISTOGRAM}_bucket":
            buckets.setdefault(s.labels["source"], {})[float(s.labels["le"])] = s.value
    return buckets


def since(
    before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]
) -> dict[str, dict[float, float]]:
    """The batches counted between two reads of the histogram, per source."""
    return {
        source: {
            bound: count - before.get(source, {}).get(bound, 0.0)
            for bound, count in buckets.items()
        }
        for source, buckets in after.items()
    }


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
