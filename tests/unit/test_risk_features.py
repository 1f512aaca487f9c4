"""The feature definition: point in time correct, bounded, and unchanged by a trip through
its stored bytes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ordermesh_payment.risk.dataset import labelled, replay
from ordermesh_payment.risk.decision_log import skew
from ordermesh_payment.risk.events import Attempt, Item, PaymentOutcome
from ordermesh_payment.risk.features import (
    HORIZON_MS,
    MAX_RECENT,
    EntityKey,
    EntityState,
    entity_keys,
    keys_of,
)
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import (
    DAY_MS,
    RESALE_PRONE_SKUS,
    SimulationSettings,
    Simulator,
)

DEFINITION = RiskSettings().feature_definition()
EVENTS, TRUTH = Simulator(SimulationSettings(orders=1500, fraud_share=0.05, seed=5)).run()


def _attempt(order_id: str, at_ms: int, token: str = "tok-1", amount: int = 1000) -> Attempt:
    return Attempt(
        order_id, at_ms, "c1", token, "d1", "100.64.0.1", amount, "EUR",
        (Item("TEA", 1, amount),), "DE", "DE", "mail.example", 0,
    )  # fmt: skip


def _features(attempt: Attempt, history: list[PaymentOutcome]) -> dict[str, float]:
    states: dict[EntityKey, EntityState] = {}
    for outcome in history:
        DEFINITION.apply(states, outcome)
    return dict(zip(DEFINITION.names, DEFINITION.vector(states, attempt), strict=True))


def test_the_default_resale_prone_skus_are_the_simulated_catalogues() -> None:
    assert DEFINITION.resale_prone_skus == {sku for sku, _ in RESALE_PRONE_SKUS}


def test_windows_count_what_happened_before_the_attempt_and_nothing_older() -> None:
    t = 10 * DAY_MS
    history = [
        PaymentOutcome(_attempt("o1", t - 2 * DAY_MS), False),  # outside every window
        PaymentOutcome(_attempt("o2", t - 2 * 3_600_000, "tok-2", 700), True),  # 24 h only
        PaymentOutcome(_attempt("o5", t - 30 * 60_000, "tok-2", 200), True),  # 1 h and 24 h
        PaymentOutcome(_attempt("o3", t - 5 * 60_000, "tok-3", 500), True),  # all three
        PaymentOutcome(_attempt("o6", t + 60_000, "tok-3", 9000), True),  # after it: none
    ]
    f = _features(_attempt("o4", t, "tok-4", 4000), history)
    # Each window's figure differs from the others': one summed over the wrong part shows.
    assert (f["customer_count_10m"], f["customer_count_1h"], f["customer_count_24h"]) == (1, 2, 3)
    amounts = (f["customer_amount_10m"], f["customer_amount_1h"], f["customer_amount_24h"])
    assert amounts == (500, 700, 1400)
    assert (f["customer_declines_1h"], f["customer_declines_24h"]) == (2, 3)
    assert f["customer_distinct_tokens_24h"] == 3  # tok-2, tok-3 and this attempt's tok-4
    assert f["customer_age_h"] == 48
    assert f["token_seen_before"] == 0
    assert f["amount_vs_usual"] == 4000 / 1000  # approved: o1 only


def test_a_customer_with_no_history_is_compared_with_the_population_prior() -> None:
    f = _features(_attempt("o1", DAY_MS, amount=6000), [])
    assert f["amount_vs_usual"] == 6000 / DEFINITION.prior_amount_minor
    assert f["customer_seen_before"] == 0
    assert f["customer_count_24h"] == 0


def test_the_same_payment_applied_twice_counts_once() -> None:
    outcome = PaymentOutcome(_attempt("o1", DAY_MS), False)
    once = _features(_attempt("o2", DAY_MS + 1), [outcome])
    twice = _features(_attempt("o2", DAY_MS + 1), [outcome, outcome])
    assert once == twice


def test_a_payment_redelivered_after_the_horizon_counts_once() -> None:
    first = PaymentOutcome(_attempt("o1", DAY_MS), False)
    later = PaymentOutcome(_attempt("o2", 3 * DAY_MS), False)  # o1 has left the window
    now = _attempt("o3", 3 * DAY_MS + 1)
    assert _features(now, [first, later, first]) == _features(now, [first, later])


def test_a_busy_entity_keeps_its_newest_attempts_and_counts_stop_at_the_bound() -> None:
    t = 10 * DAY_MS
    history = [
        PaymentOutcome(_attempt(f"o{i}", t - 3_600_000 + i * 1000, amount=100 + i), False)
        for i in range(MAX_RECENT + 10)
    ]
    states: dict[EntityKey, EntityState] = {}
    for outcome in history:
        DEFINITION.apply(states, outcome)
    customer = states[("customer", "c1")]
    assert len(customer) == MAX_RECENT
    assert not customer.holds("o9")
    assert customer.holds("o10")
    assert (customer.approved, customer.first_seen_ms) == (MAX_RECENT + 10, t - 3_600_000)
    f = _features(_attempt("now", t), history)
    assert f["customer_count_24h"] == MAX_RECENT
    assert f["customer_amount_24h"] == sum(100 + i for i in range(10, MAX_RECENT + 10))
    # One older than all a full state keeps, arriving late, is ignored: it would leave
    # at once, and it can no longer be told from a redelivery of one that left.
    before = EntityState.from_bytes(customer.to_bytes())
    DEFINITION.apply(states, PaymentOutcome(_attempt("late", t - 2 * 3_600_000), False))
    assert states[("customer", "c1")] == before


def test_a_stored_state_of_another_format_is_refused_not_misread() -> None:
    stored = bytearray(EntityState(1, 2, 3).to_bytes())
    stored[0] = 1
    with pytest.raises(ValueError, match="format 1"):
        EntityState.from_bytes(bytes(stored))


def test_payments_applied_out_of_time_order_within_the_horizon_leave_the_same_states() -> None:
    # Online, one batch's attempts share their time: times cut to the 10 minutes.
    payments = [
        replace(e, attempt=replace(e.attempt, at_ms=e.at_ms - e.at_ms % 600_000))
        for e in EVENTS
        if isinstance(e, PaymentOutcome)
    ]
    # As from several partitions: each run of payments within the horizon arrives
    # newest first, and then again (redelivered).
    runs: list[list[PaymentOutcome]] = []
    for outcome in payments:
        if runs and outcome.at_ms - runs[-1][0].at_ms < HORIZON_MS:
            runs[-1].append(outcome)
        else:
            runs.append([outcome])
    assert max(map(len, runs)) > 20
    in_order: dict[EntityKey, EntityState] = {}
    shuffled: dict[EntityKey, EntityState] = {}
    for run in runs:
        for outcome in run:
            DEFINITION.apply(in_order, outcome)
        for outcome in [*reversed(run), *run]:
            DEFINITION.apply(shuffled, outcome)
        touched = keys_of(o.attempt for o in run)
        assert {k: shuffled[k] for k in touched} == {k: in_order[k] for k in touched}


def test_replayed_features_never_see_the_attempt_itself_or_anything_after_it() -> None:
    full = replay(EVENTS, DEFINITION)
    cut = len(full) // 2
    payments = [e for e in EVENTS if isinstance(e, PaymentOutcome)]
    prefix = replay(payments[: cut + 1], DEFINITION)
    assert [r.vector for r in prefix] == [r.vector for r in full[: cut + 1]]


def test_states_kept_as_bytes_between_events_give_the_offline_values() -> None:
    offline = replay(EVENTS, DEFINITION)
    stored: dict[EntityKey, bytes] = {}  # what the online table keeps
    online = []
    for event in EVENTS:
        if not isinstance(event, PaymentOutcome):
            continue
        keys = entity_keys(event.attempt)
        states = {k: EntityState.from_bytes(stored[k]) for k in keys if k in stored}
        online.append(DEFINITION.vector(states, event.attempt))
        DEFINITION.apply(states, event)
        stored.update({k: states[k].to_bytes() for k in keys})
    assert online == [r.vector for r in offline]


def test_card_testing_stands_out_in_tokens_per_customer_and_declines() -> None:
    rows = {r.attempt.order_id: r for r in replay(EVENTS, DEFINITION)}
    testing = [t.order_id for t in TRUTH if t.pattern == "card_testing"]
    index = DEFINITION.names.index("customer_distinct_tokens_24h")
    late_in_burst = [rows[o].vector[index] for o in testing if rows[o].vector[index] >= 4]
    assert late_in_burst
    genuine = [r.vector[index] for o, r in rows.items() if o not in {t.order_id for t in TRUTH}]
    assert sum(v >= 4 for v in genuine) < len(genuine) / 100


def test_only_matured_authorized_attempts_are_labelled_and_by_chargebacks_known_then() -> None:
    rows = replay(EVENTS, DEFINITION)
    last = rows[-1].attempt.at_ms
    data = labelled(rows, EVENTS, as_of_ms=last, maturity_ms=10 * DAY_MS)
    assert data.rows
    assert all(not r.declined and r.attempt.at_ms <= last - 10 * DAY_MS for r in data.rows)
    fraud = {t.order_id for t in TRUTH}
    labels = dict(zip((r.attempt.order_id for r in data.rows), data.labels, strict=True))
    assert all(order_id in fraud for order_id, y in labels.items() if y)
    # Fraud charged back after the cut-off is not known then: labelled genuine.
    unknown_yet = [o for o, y in labels.items() if o in fraud and not y]
    assert unknown_yet
    everything = labelled(rows, EVENTS, as_of_ms=last + 60 * DAY_MS, maturity_ms=70 * DAY_MS)
    assert sum(everything.labels) > 0


def test_the_schema_hash_follows_the_parameters_of_the_definition() -> None:
    assert replace(DEFINITION, prior_amount_minor=1).schema_hash != DEFINITION.schema_hash
    assert RiskSettings().feature_definition().schema_hash == DEFINITION.schema_hash


def test_skew_is_zero_for_vectors_scored_one_decision_at_a_time() -> None:
    rows = replay(EVENTS, DEFINITION)[:300]
    logged = [(PaymentOutcome(r.attempt, r.declined), list(r.vector)) for r in rows]
    report = skew(logged, DEFINITION)
    assert (report.decisions, report.decisions_with_skew, report.features) == (300, 0, {})
    tampered = [(o, [v + 1 if i == 0 else v for i, v in enumerate(f)]) for o, f in logged[:10]]
    assert skew(tampered + logged[10:], DEFINITION).features == {DEFINITION.names[0]: (10, 1.0)}
