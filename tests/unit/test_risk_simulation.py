"""The risk simulator: a seeded, time-ordered log with its fraud patterns and late labels."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ordermesh_cli.main import app
from ordermesh_payment.risk.events import Chargeback, PaymentOutcome, read_events
from ordermesh_payment.risk.simulate import DAY_MS, SimulationSettings, Simulator

SETTINGS = SimulationSettings(orders=2000, fraud_share=0.04, seed=11)


def test_the_same_seed_gives_the_same_log_and_another_seed_another() -> None:
    first, _ = Simulator(SETTINGS).run()
    again, _ = Simulator(SETTINGS).run()
    other, _ = Simulator(SimulationSettings(orders=2000, fraud_share=0.04, seed=12)).run()
    assert first == again
    assert first != other


def test_the_log_is_in_time_order_with_the_asked_orders_and_fraud_share() -> None:
    events, truth = Simulator(SETTINGS).run()
    times = [e.at_ms for e in events]
    assert times == sorted(times)
    payments = [e for e in events if isinstance(e, PaymentOutcome)]
    assert len(payments) == 2000
    assert len(truth) == 80
    assert {t.pattern for t in truth} == {
        "card_testing",
        "account_takeover",
        "velocity_abuse",
        "resale",
    }


def test_chargebacks_label_only_authorized_fraud_and_arrive_within_the_delay() -> None:
    events, truth = Simulator(SETTINGS).run()
    fraud = {t.order_id for t in truth}
    payments = {e.attempt.order_id: e for e in events if isinstance(e, PaymentOutcome)}
    chargebacks = [e for e in events if isinstance(e, Chargeback)]
    assert chargebacks
    for back in chargebacks:
        paid = payments[back.order_id]
        assert back.order_id in fraud
        assert not paid.declined
        assert back.amount_minor == paid.attempt.amount_minor
        assert 7 * DAY_MS <= back.at_ms - paid.at_ms <= 45 * DAY_MS
    authorized_fraud = {o for o in fraud if not payments[o].declined}
    assert {b.order_id for b in chargebacks} == authorized_fraud


def test_card_testing_is_bursts_of_small_orders_on_new_tokens() -> None:
    events, truth = Simulator(SETTINGS).run()
    testing = {t.order_id for t in truth if t.pattern == "card_testing"}
    attempts = [
        e.attempt for e in events if isinstance(e, PaymentOutcome) and e.attempt.order_id in testing
    ]
    assert all(a.amount_minor < 1500 for a in attempts)
    assert len({a.token for a in attempts}) == len(attempts)


def test_the_simulate_command_writes_the_log_and_its_summary(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["risk", "simulate", "--out", str(tmp_path), "--orders", "300", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert '"orders": 300' in result.output
    logged = list(read_events(tmp_path / "events.jsonl"))
    assert logged == Simulator(SimulationSettings(orders=300, seed=3)).run()[0]
    assert (tmp_path / "truth.jsonl").exists()
