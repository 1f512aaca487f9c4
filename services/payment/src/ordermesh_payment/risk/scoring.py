"""Scoring a batch of authorizations before the provider is asked.

The whole batch is scored at once: one read of the feature states, one call of the
model. The model has a latency budget; when it is missing, fails, is over budget or
still busy with an earlier batch, the rules decide (and a metric counts why), so a
spike of scoring degrades to rules and never queues behind the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ordermesh_payment.risk.events import Attempt, PaymentOutcome
from ordermesh_payment.risk.feature_store import FeatureStore
from ordermesh_payment.risk.models import (
    BASELINE_RULES,
    Artifact,
    ArtifactError,
    RulesModel,
    load_artifact,
)
from ordermesh_platform.db import Transactions
from ordermesh_platform.logs import get_logger

log = get_logger(__name__)

RULES_THRESHOLD = 0.4  # one rule of weight 0.4 or more declines


@dataclass(frozen=True)
class RiskDecision:
    score: float
    declined: bool
    threshold: float
    model_version: str  # the model that decided; "rules" when the rules did
    fallback: str  # why the rules decided instead of the model; "" when it did not


@dataclass(frozen=True)
class RiskObserver:
    """Where the scorer reports (the service wires Prometheus metrics in)."""

    scored: Callable[[str, float], None] = lambda source, seconds: None
    fallback: Callable[[str], None] = lambda reason: None
    decided: Callable[[str, bool], None] = lambda source, declined: None


def load_model(path: str, schema_hash: str) -> Artifact | None:
    """The artifact at ``path``, or None (rules only) when there is none or it cannot
    be used: a corrupt model never stops payments."""
    if not path:
        return None
    try:
        return load_artifact(Path(path), schema_hash)
    except ArtifactError as error:
        log.error("risk model unusable, the rules decide", error=str(error))
        return None


def _retrieve(done: asyncio.Future[list[float]]) -> None:
    """A model call given up on still ends: take its error so it is not reported as lost."""
    if not done.cancelled():
        done.exception()


class RiskScorer:
    def __init__(
        self,
        sessions: Transactions,
        features: FeatureStore,
        model: Artifact | None,
        budget_s: float,
        observer: RiskObserver | None = None,
    ) -> None:
        self._sessions = sessions
        self.features = features
        self.model = model
        self._budget_s = budget_s
        self._observe = observer or RiskObserver()
        self._rules = RulesModel(BASELINE_RULES, features.definition.names)
        # The model's call in flight: one at a time, a batch arriving meanwhile gets
        # the rules.
        self._running: asyncio.Future[list[float]] | None = None

    def use_model(self, model: Artifact | None) -> None:
        """Swap the model (a promotion or a rollback); the next batch uses it."""
        self.model = model

    async def decide(self, attempts: Sequence[Attempt]) -> list[RiskDecision]:
        """One decision per attempt, in order. Never raises: whatever fails, the
        rules decide, on history-free features when the states cannot be read."""
        if not attempts:
            return []
        try:
            async with self._sessions() as conn:
                vectors = await self.features.vectors(conn, attempts)
        except Exception:
            log.exception("risk features unreadable, the rules decide without history")
            definition = self.features.definition
            vectors = [definition.vector({}, attempt) for attempt in attempts]
            return self._by_rules(vectors, "no_features")
        model = self.model
        if model is None:
            return self._by_rules(vectors, "no_model")
        scores, fallback = await self._model_scores(model, vectors)
        if scores is None:
            return self._by_rules(vectors, fallback)
        decisions = [
            RiskDecision(s, s >= model.threshold, model.threshold, model.version, "")
            for s in scores
        ]
        for d in decisions:
            self._observe.decided("model", d.declined)
        return decisions

    async def _model_scores(
        self, model: Artifact, vectors: list[list[float]]
    ) -> tuple[list[float] | None, str]:
        """The model's scores and "", or None and why the rules decide instead."""
        if self._running is not None and not self._running.done():
            return None, "busy"  # an earlier batch still holds the model
        started = time.perf_counter()
        # In a thread, so that the budget bounds the wait: a model that overruns
        # finishes in its thread while the rules decide, and keeps the next batch out.
        running = asyncio.ensure_future(asyncio.to_thread(model.model.scores, vectors))
        running.add_done_callback(_retrieve)
        self._running = running
        try:
            scores = await asyncio.wait_for(asyncio.shield(running), self._budget_s)
        except TimeoutError:
            return None, "over_budget"
        except Exception:
            log.exception("risk model failed, the rules decide")
            return None, "failed"
        finally:
            self._observe.scored("model", time.perf_counter() - started)
        return scores, ""

    def _by_rules(self, vectors: list[list[float]], fallback: str) -> list[RiskDecision]:
        self._observe.fallback(fallback)
        started = time.perf_counter()
        decisions = []
        for vector in vectors:
            score = self._rules.score(vector)
            declined = score >= RULES_THRESHOLD
            decisions.append(RiskDecision(score, declined, RULES_THRESHOLD, "rules", fallback))
            self._observe.decided("rules", declined)
        self._observe.scored("rules", time.perf_counter() - started)
        return decisions

    async def record(self, outcomes: Sequence[PaymentOutcome]) -> None:
        """Move the feature states with the batch's outcomes (one transaction)."""
        if outcomes:
            async with self._sessions.begin() as conn:
                await self.features.apply(conn, outcomes)
