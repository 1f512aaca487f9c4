"""Prometheus metrics of every service, served on ``ORDERMESH_METRICS_PORT``.

prometheus-client keeps metrics in one process-wide registry, so they are declared
here once; each service process only fills the ones that concern it. A labelled metric
shows nothing until it is filled; an unlabelled one (``ONE_SERVICE``) would show 0 in
every service, so it is registered only by the service it belongs to (``expose``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Self

import prometheus_client
from prometheus_client import start_http_server
from prometheus_client.metrics import MetricWrapperBase


class _ChildrenOnce(MetricWrapperBase):
    """A labelled metric that looks each child up once per set of label values:
    prometheus_client's ``labels()`` takes a lock and builds and checks its key on every
    call (about 3 µs here), which paths taken per call or per order would pay each time.
    ``remove`` and ``clear`` forget what was looked up, so a child dropped from the
    metric is never counted again unseen."""

    def labels(self, *values: Any, **named: Any) -> Self:
        if named:
            return super().labels(*values, **named)
        children: dict[tuple[Any, ...], Self] = self.__dict__.setdefault("_children_once", {})
        child = children.get(values)
        if child is None:
            # Two threads may both get here: ``labels`` gives both the same child.
            child = children[values] = super().labels(*values)
        return child

    def remove(self, *values: Any) -> None:
        self.__dict__.pop("_children_once", None)
        super().remove(*values)

    def clear(self) -> None:
        self.__dict__.pop("_children_once", None)
        super().clear()


class Counter(_ChildrenOnce, prometheus_client.Counter):
    pass


class Gauge(_ChildrenOnce, prometheus_client.Gauge):
    pass


class Histogram(_ChildrenOnce, prometheus_client.Histogram):
    pass


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RPC_REQUESTS = Counter(
    "ordermesh_rpc_requests_total", "gRPC calls handled, by method and status code.",
    ["service", "method", "code"],
)  # fmt: skip
RPC_LATENCY = Histogram(
    "ordermesh_rpc_duration_seconds", "Time to handle a gRPC call, by method.",
    ["service", "method"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
RPC_IN_FLIGHT = Gauge("ordermesh_rpc_in_flight", "gRPC calls being handled now.", ["service"])
RPC_SHED = Counter(
    "ordermesh_rpc_shed_total", "Calls refused with RESOURCE_EXHAUSTED past the in-flight bound.",
    ["service", "method"],
)  # fmt: skip

OUTBOX_BACKLOG = Gauge(
    "ordermesh_outbox_backlog", "Committed outbox rows not yet acknowledged by Kafka.", ["service"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "ordermesh_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox row.", ["service"]
)
OUTBOX_PUBLISHED = Counter(
    "ordermesh_outbox_published_total", "Outbox rows acknowledged by Kafka.", ["service", "topic"]
)

CONSUMER_LAG = Gauge(
    "ordermesh_consumer_lag", "Records behind the partition's high watermark.",
    ["consumer", "topic", "partition"],
)  # fmt: skip
CONSUMER_MESSAGES = Counter(
    "ordermesh_consumer_messages_total",
    "Records consumed, by result: handled, duplicate, ignored (of no use to the handler), "
    "failed (an attempt), dead_lettered.",
    ["consumer", "topic", "result"],
)

SAGA_OUTCOMES = Counter(
    "ordermesh_saga_outcomes_total", "Orders that reached a decision, by outcome and reason.",
    ["outcome", "reason"],
)  # fmt: skip

PSP_LATENCY = Histogram(
    "ordermesh_psp_call_duration_seconds", "Payment-provider calls, by operation and outcome.",
    ["operation", "outcome"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
PSP_BREAKER_OPEN = Gauge(
    "ordermesh_psp_circuit_open", "1 while the payment-provider circuit is open (or half-open).",
    registry=None,
)  # fmt: skip

RISK_SCORING = Histogram(
    "ordermesh_risk_scoring_duration_seconds",
    "Scoring one authorization batch, by what scored it (model, rules).",
    ["source"], buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)  # fmt: skip
RISK_FALLBACKS = Counter(
    "ordermesh_risk_fallbacks_total",
    "Batches the rules decided instead of the model, by reason (no_model, over_budget, "
    "failed, no_features).",
    ["reason"],
)  # fmt: skip
RISK_DECISIONS = Counter(
    "ordermesh_risk_decisions_total",
    "Risk decisions that acted, by variant (champion, challenger, rules) and decision "
    "(approve, decline, explore: a would-be decline approved at random).",
    ["variant", "decision"],
)  # fmt: skip
RISK_FEATURE_FRESHNESS = Histogram(
    "ordermesh_risk_feature_freshness_seconds",
    "From a payment event's time to its attempt being applied to the risk features.",
    buckets=LATENCY_BUCKETS, registry=None,
)  # fmt: skip
RISK_SCORE_PSI = Gauge(
    "ordermesh_risk_score_psi",
    "PSI of the champion's recent scores against its training reference "
    "(0.1: moving, 0.25: shifted).",
    ["version"],
)  # fmt: skip
RISK_FEATURE_PSI = Gauge(
    "ordermesh_risk_feature_psi",
    "PSI of each feature's recent values against the champion's training reference.",
    ["feature"],
)  # fmt: skip
RISK_SHADOW_DECISIONS = Counter(
    "ordermesh_risk_shadow_decisions_total",
    "What each challenger would have decided in shadow, by model version and decision.",
    ["version", "decision"],
)  # fmt: skip

NOTIFICATIONS = Counter(
    "ordermesh_notifications_total", "Delivery attempts, by channel and result.",
    ["channel", "result"],
)  # fmt: skip
NOTIFICATIONS_DUE = Gauge(
    "ordermesh_notifications_due",
    "Deliveries due and not yet sent (PENDING, their next attempt due): the whole table.",
    registry=None,
)
NOTIFICATIONS_OLDEST_DUE = Gauge(
    "ordermesh_notifications_oldest_due_seconds",
    "How long the longest-waiting due delivery has been due: how late notifications are.",
    registry=None,
)

BATCH_SIZE = Histogram(
    "ordermesh_batch_size", "Items per batch, by batcher (a hop, a store, a relay).",
    ["batcher"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)  # fmt: skip
BATCH_QUEUE_WAIT = Histogram(
    "ordermesh_batch_queue_wait_seconds", "Time an item waited for its batch to start.",
    ["batcher"], buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)  # fmt: skip
BATCH_DURATION = Histogram(
    "ordermesh_batch_duration_seconds",
    "Time a batch took, from its start to its answers: with the queue wait, an item's "
    "time in a batcher.",
    ["batcher"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)  # fmt: skip
BATCH_STALLS = Counter(
    "ordermesh_batch_stalls_total",
    "Batches that ran past their batcher's stall time and let the next batch start "
    "(a slow peer, a lock wait).",
    ["batcher"],
)
DB_STATEMENTS = Counter(
    "ordermesh_db_statements_total", "Statements sent to the service's database.", ["service"]
)


# The unlabelled metrics, each filled by one service only: registered by that service.
ONE_SERVICE = (
    PSP_BREAKER_OPEN,
    RISK_FEATURE_FRESHNESS,
    NOTIFICATIONS_DUE,
    NOTIFICATIONS_OLDEST_DUE,
)


def expose(*metrics: MetricWrapperBase) -> None:
    """Put metrics of ``ONE_SERVICE`` on this process's /metrics (again: no change; the
    tests run several services in one process)."""
    for metric in metrics:
        # Refused as a duplicate once registered.
        with contextlib.suppress(ValueError):
            prometheus_client.REGISTRY.register(metric)


def serve_metrics(port: int, host: str) -> int:
    """Start the /metrics endpoint (a daemon thread); 0 means no endpoint."""
    if port <= 0:
        return 0
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)
