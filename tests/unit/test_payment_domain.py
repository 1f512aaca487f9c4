from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ordermesh.common.v1.errors_pb2 import ErrorReason
from ordermesh_payment.domain import TRANSITIONS, Payment, PaymentState
from ordermesh_platform.errors import Conflict, FailedPrecondition

NOW = datetime.now(UTC)


def _payment(state: PaymentState) -> Payment:
    return Payment("p1", "o1", "c1", state, 500, "EUR", "", "ref", NOW, NOW)


@pytest.mark.parametrize("start", list(PaymentState))
@pytest.mark.parametrize("target", list(PaymentState))
def test_the_state_machine_allows_exactly_its_table(
    start: PaymentState, target: PaymentState
) -> None:
    payment = _payment(start)
    if target is start or target in TRANSITIONS[start]:
        assert payment.moved_to(target).state is target
    else:
        with pytest.raises(FailedPrecondition) as raised:
            payment.moved_to(target)
        assert raised.value.reason == ErrorReason.ILLEGAL_PAYMENT_TRANSITION
        assert raised.value.metadata["state"] == start.value


def test_money_only_moves_forward() -> None:
    assert PaymentState.AUTHORIZED not in TRANSITIONS[PaymentState.CAPTURED]
    assert TRANSITIONS[PaymentState.REFUNDED] == set()
    assert TRANSITIONS[PaymentState.DECLINED] == set()


def test_a_retry_with_another_amount_is_a_conflict() -> None:
    payment = _payment(PaymentState.AUTHORIZED)
    payment.check_same_request(500, "EUR")
    with pytest.raises(Conflict):
        payment.check_same_request(501, "EUR")


def test_a_declined_or_voided_payment_refuses_again() -> None:
    for state, reason in [
        (PaymentState.DECLINED, "PAYMENT_DECLINED"),
        (PaymentState.VOIDED, "PAYMENT_VOIDED"),
    ]:
        with pytest.raises(FailedPrecondition) as raised:
            _payment(state).refuse_if_finished_without_money()
        assert raised.value.reason_name == reason
