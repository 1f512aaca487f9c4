"""Scoring a batch of authorizations before the provider is asked.

The whole batch is scored at once: one read of the feature states, one call of the
models. The models have a latency budget; when they are missing, fail, or overran it
lately, the rules decide (and a metric counts why), so a spike of scoring degrades to
rules and never queues behind a model.

The call runs on the event loop, not in a worker thread: the trees score a batch of 50
in about a quarter of a millisecond, while a thread waited for the GIL behind the
loop's own work (10 ms at p50, 100 ms at p99 on a loaded 2-core machine). Such a call
cannot be cut off, so the budget is enforced on the next batches instead: a call that
overran it sends the batches of the following ``OVER_BUDGET_REST_S`` to the rules.

Variants: the champion decides, except for the share of customers (by a stable hash
of the customer id) given to the newest challenger. Every challenger also scores every
batch in shadow, off the path, without acting."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ordermesh_payment.domain import RiskAssessment, RiskVerdict
from ordermesh_payment.risk.decision_log import DecisionLog
from ordermesh_payment.risk.drift import drift
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
from ordermesh_platform.writes import Rows

log = get_logger(__name__)

RULES_THRESHOLD = 0.4  # one rule of weight 0.4 or more declines
CHAMPION = "champion"
CHALLENGER = "challenger"
RULES = "rules"
# After a model call over its budget, the rules decide for this long: a model too slow
# for its budget costs one slow batch per rest, not every batch.
OVER_BUDGET_REST_S = 5.0


def variant_bucket(customer_id: str) -> float:
    """The customer's place in [0, 1): the same on every pod, after every restart and
    for every model version, so a customer stays in one variant while shares hold."""
    digest = hashlib.sha256(customer_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class RiskDecision:
    score: float
    declined: bool
    threshold: float
    model_version: str  # the model that decided; "rules" when the rules did
    fallback: str  # why the rules decided instead of the model; "" when it did not
    variant: str = CHAMPION  # champion, challenger, or rules
    features: tuple[float, ...] = ()  # the vector scored (the decision log keeps it)
    # A would-be decline approved to learn what declines cost (see exploration_share),
    # and the probability the policy had of taking the action it took.
    explored: bool = False
    propensity: float = 1.0

    def assessment(self) -> RiskAssessment:
        """What the payment, its answer and its events carry of this decision."""
        verdict = RiskVerdict(_decision(self.declined, self.explored))
        return RiskAssessment(self.score, verdict, self.model_version, self.variant)


@dataclass(frozen=True)
class RiskObserver:
    """Where the scorer reports (the service wires Prometheus metrics in)."""

    scored: Callable[[str, float], None] = lambda source, seconds: None
    fallback: Callable[[str], None] = lambda reason: None
    # variant (champion, challenger, rules) and decision (approve, decline, explore)
    decided: Callable[[str, str], None] = lambda variant, decision: None
    shadowed: Callable[[str, bool], None] = lambda version, declined: None


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


def _decision(declined: bool, explored: bool) -> str:
    if explored:
        return "explore"
    return "decline" if declined else "approve"


class RiskScorer:
    def __init__(
        self,
        sessions: Transactions,
        features: FeatureStore,
        model: Artifact | None,
        budget_s: float,
        observer: RiskObserver | None = None,
        challenger_share: float = 0.0,
        recent_rows: int = 5000,
        decision_log: DecisionLog | None = None,
        exploration_share: float = 0.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._explore = exploration_share
        self._rng = rng or random.Random()
        self._sessions = sessions
        self._decision_log = decision_log
        self.features = features
        self.model = model
        self.challengers: tuple[Artifact, ...] = ()
        self._budget_s = budget_s
        self._share = challenger_share
        self._observe = observer or RiskObserver()
        self._rules = RulesModel(BASELINE_RULES, features.definition.names)
        # Until when the rules decide after a model call overran its budget (monotonic).
        self._resting_until = 0.0
        self._clock = clock
        # What a model call cost is its thread's CPU time: on a busy machine the wall
        # time also counts the slices the OS gave other processes, which the rules
        # would not give back.
        self._cpu_clock = cpu_clock
        # Shadow scoring is off the path, in a thread: one at a time, skipped while busy.
        self._shadow: asyncio.Future[list[list[float]]] | None = None
        # The champion's latest inputs and scores, for drift (``drift_now``).
        self._recent: deque[tuple[list[float], float]] = deque(maxlen=recent_rows)

    def use_model(self, model: Artifact | None) -> None:
        """Swap the champion (a promotion or a rollback); the next batch uses it."""
        self.use_models(model, self.challengers)

    def use_models(self, champion: Artifact | None, challengers: Sequence[Artifact]) -> None:
        """Swap the champion and the challengers (oldest first) at once."""
        if champion is not self.model:
            self._recent.clear()  # drift is measured for the model in use
        self.model = champion
        self.challengers = tuple(challengers)

    async def vectors_for(self, attempts: Sequence[Attempt]) -> list[list[float]] | None:
        """The attempts' features from the states as they are now (one SELECT; the
        attempts do not see each other), or None when the states cannot be read. No
        decision yet: the caller reads them while it does other work."""
        if not attempts:
            return []
        try:
            async with self._sessions() as conn:
                return await self.features.vectors(conn, attempts)
        except Exception:
            log.exception("risk features unreadable, the rules decide without history")
            return None

    async def decide(
        self, attempts: Sequence[Attempt], vectors: Sequence[list[float]] | None
    ) -> list[RiskDecision]:
        """One decision per attempt, in order, on its features (``vectors_for``; None
        when they could not be read). Never raises: whatever fails, the rules decide, on
        history-free features when there are no others."""
        if not attempts:
            return []
        if vectors is None:
            definition = self.features.definition
            return self._by_rules(
                [definition.vector({}, attempt) for attempt in attempts], "no_features"
            )
        vectors = list(vectors)
        champion, challengers = self.model, self.challengers
        if champion is None:
            return self._by_rules(vectors, "no_model")
        treated = challengers[-1] if challengers and self._share > 0 else None
        acting = [
            treated
            if treated is not None and variant_bucket(a.customer_id) < self._share
            else champion
            for a in attempts
        ]
        scores, fallback = await self._model_scores(acting, vectors)
        if scores is None:
            return self._by_rules(vectors, fallback)
        decisions = []
        for model, score, vector in zip(acting, scores, vectors, strict=True):
            variant = CHAMPION if model is champion else CHALLENGER
            declined, explored, propensity = self._act(score >= model.threshold)
            decisions.append(
                RiskDecision(
                    score, declined, model.threshold, model.version, "", variant,
                    tuple(vector), explored, propensity,
                )
            )  # fmt: skip
            self._observe.decided(variant, _decision(declined, explored))
        self._recent.extend(
            (vector, score)
            for vector, score, model in zip(vectors, scores, acting, strict=True)
            if model is champion
        )
        if challengers:
            self._score_in_shadow(challengers, vectors)
        return decisions

    def _act(self, would_decline: bool) -> tuple[bool, bool, float]:
        """(declined, explored, propensity). A share of would-be declines is approved
        at random: the only way to learn how much fraud the declines really stop and
        how many good customers they turn away (docs/risk.md)."""
        if not would_decline:
            return False, False, 1.0
        if self._explore > 0 and self._rng.random() < self._explore:
            return False, True, self._explore
        return True, False, 1.0 - self._explore

    async def _model_scores(
        self, acting: list[Artifact], vectors: list[list[float]]
    ) -> tuple[list[float] | None, str]:
        """Each row's score by its acting model, and "", or None and why the rules
        decide instead."""
        if self._clock() < self._resting_until:
            return None, "over_budget"  # a recent call overran: the rules, at once
        started, started_cpu = time.perf_counter(), self._cpu_clock()
        models = list({id(m): m for m in acting}.values())
        try:
            scores = [0.0] * len(vectors)
            for model in models:
                picked = [i for i, m in enumerate(acting) if m is model]
                for i, value in zip(
                    picked, model.model.scores([vectors[i] for i in picked]), strict=True
                ):
                    scores[i] = value
        except Exception:
            log.exception("risk model failed, the rules decide")
            return None, "failed"
        finally:
            self._observe.scored("model", time.perf_counter() - started)
        cost = self._cpu_clock() - started_cpu
        if cost > self._budget_s:
            # Already computed, so this batch keeps its scores; the next ones rest.
            self._resting_until = self._clock() + OVER_BUDGET_REST_S
            log.warning("risk model over its budget, the rules decide for a while",
                        cpu_seconds=round(cost, 4), rest_s=OVER_BUDGET_REST_S)  # fmt: skip
        return scores, ""

    async def drift_now(self) -> tuple[str, dict[str, Any]] | None:
        """The champion's version and the PSI of its recent scores and inputs against
        its training reference; None without a champion, a reference or rows. The
        arithmetic runs in a thread: the event loop serves payments meanwhile."""
        champion = self.model
        if champion is None or not champion.reference or not self._recent:
            return None
        rows = list(self._recent)  # a snapshot: batches go on adding to the window
        measured = await asyncio.to_thread(
            drift,
            champion.reference,
            champion.feature_names,
            [vector for vector, _ in rows],
            [score for _, score in rows],
        )
        return champion.version, measured

    def _score_in_shadow(self, challengers: Sequence[Artifact], vectors: list[list[float]]) -> None:
        """Every challenger scores the batch off the path; only metrics come of it. A
        batch arriving while the last one is still being shadowed is not shadowed."""
        if self._shadow is not None and not self._shadow.done():
            return

        def score() -> list[list[float]]:
            return [c.model.scores(vectors) for c in challengers]

        def observe(done: asyncio.Future[list[list[float]]]) -> None:
            if done.cancelled():
                return
            if (error := done.exception()) is not None:
                log.error("risk challenger failed in shadow", error=repr(error))
                return
            for challenger, scores in zip(challengers, done.result(), strict=True):
                for value in scores:
                    self._observe.shadowed(challenger.version, value >= challenger.threshold)

        self._shadow = asyncio.ensure_future(asyncio.to_thread(score))
        self._shadow.add_done_callback(observe)

    def _by_rules(self, vectors: list[list[float]], fallback: str) -> list[RiskDecision]:
        self._observe.fallback(fallback)
        started = time.perf_counter()
        decisions = []
        for vector in vectors:
            score = self._rules.score(vector)
            declined = score >= RULES_THRESHOLD
            decisions.append(
                RiskDecision(
                    score, declined, RULES_THRESHOLD, RULES, fallback, RULES, tuple(vector)
                )
            )
            self._observe.decided(RULES, _decision(declined, False))
        self._observe.scored("rules", time.perf_counter() - started)
        return decisions

    def decision_writes(
        self, outcomes: Sequence[PaymentOutcome], decisions: Mapping[str, RiskDecision]
    ) -> list[Rows]:
        """The batch's decisions (by order id) with their outcomes, as the write after
        the outcomes' own (none without a decision log). The features are not moved
        here: payment's consumer moves them from the payment events (``feature_feed``)."""
        if not outcomes or self._decision_log is None:
            return []
        return [self._decision_log.writes(outcomes, decisions)]
