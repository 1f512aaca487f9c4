"""Which payments the simulated provider charges back, and which orders a chargeback
file names (the simulator's whole event log among them)."""

from __future__ import annotations

from pathlib import Path

from ordermesh_payment.risk.events import Attempt, Chargeback, PaymentOutcome, write_events
from ordermesh_payment.risk.tools import _chargeback_file
from ordermesh_payment.simulated_chargebacks import ChargebackRule


def test_the_rule_charges_back_the_tokens_with_its_prefix_only() -> None:
    rule = ChargebackRule("tok_fraud", 5.0)
    assert rule.charges_back("tok_fraud_17")
    assert not rule.charges_back("tok_ok")
    assert not rule.charges_back("my_tok_fraud")
    assert not ChargebackRule("", 5.0).charges_back("tok_fraud_17")


def _outcome(order_id: str) -> PaymentOutcome:
    attempt = Attempt(
        order_id, 1_000, "c1", "tok_1", "d1", "10.0.0.1", 900, "EUR", (), "DE", "DE",
        "example.com", 0,
    )  # fmt: skip
    return PaymentOutcome(attempt, declined=False)


def test_a_chargeback_file_names_the_charged_back_orders_in_any_of_its_forms(
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    write_events(log, [_outcome("o1"), _outcome("o2"), Chargeback("o2", 9_000, 900)])
    assert _chargeback_file(log) == {"o2"}  # the payments in the log are not chargebacks
    ids = tmp_path / "chargebacks.txt"
    ids.write_text("o3\n\no4\n")
    assert _chargeback_file(ids) == {"o3", "o4"}
    lines = tmp_path / "chargebacks.jsonl"
    lines.write_text('{"order_id": "o5"}\n')
    assert _chargeback_file(lines) == {"o5"}
