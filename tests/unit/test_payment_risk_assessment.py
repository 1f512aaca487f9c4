"""Risk scoring's outcome on a payment: from the scorer's decision to the wire and
the events, and absent when the payment was not scored."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from ordermesh.common.v1 import risk_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh_payment.api import payment_to_pb
from ordermesh_payment.domain import (
    Payment,
    PaymentState,
    RiskAssessment,
    RiskVerdict,
    events_of,
    risk_assessment_to_pb,
)
from ordermesh_payment.risk.scoring import RiskDecision

NOW = datetime.now(UTC)
ASSESSED = RiskAssessment(0.25, RiskVerdict.APPROVE, "lr-7", "challenger")


def _payment(state: PaymentState, risk: RiskAssessment | None) -> Payment:
    return Payment("p1", "o1", "c1", state, 500, "EUR", "", "ref", NOW, NOW, risk)


@pytest.mark.parametrize(
    ("declined", "explored", "verdict", "wire"),
    [
        (False, False, RiskVerdict.APPROVE, risk_pb2.RISK_DECISION_APPROVE),
        (True, False, RiskVerdict.DECLINE, risk_pb2.RISK_DECISION_DECLINE),
        (False, True, RiskVerdict.EXPLORE, risk_pb2.RISK_DECISION_EXPLORE),
    ],
)
def test_a_decision_becomes_the_assessment_on_the_wire(
    declined: bool, explored: bool, verdict: RiskVerdict, wire: risk_pb2.RiskDecision.ValueType
) -> None:
    decision = RiskDecision(0.61, declined, 0.5, "gbt-3", "", "champion", explored=explored)
    assessment = decision.assessment()
    assert assessment == RiskAssessment(0.61, verdict, "gbt-3", "champion")
    assert risk_assessment_to_pb(assessment) == risk_pb2.RiskAssessment(
        score=0.61, decision=wire, model_version="gbt-3", variant="champion"
    )


def test_the_payment_keeps_its_assessment_through_its_moves() -> None:
    authorized = _payment(PaymentState.AUTHORIZING, ASSESSED).moved_to(PaymentState.AUTHORIZED)
    assert authorized.moved_to(PaymentState.CAPTURED).risk == ASSESSED
    assert payment_to_pb(authorized).risk_assessment.model_version == "lr-7"  # type: ignore[union-attr]


def test_the_authorization_events_carry_the_assessment() -> None:
    declined = replace(_payment(PaymentState.DECLINED, ASSESSED), decline_reason="RISK_DECLINED")
    [authorized_event, declined_event] = [
        e.payload for e in events_of([_payment(PaymentState.AUTHORIZED, ASSESSED), declined])
    ]
    assert isinstance(authorized_event, events_pb2.PaymentAuthorized)
    assert isinstance(declined_event, events_pb2.PaymentDeclined)
    for event in (authorized_event, declined_event):
        assert event.risk_assessment == risk_pb2.RiskAssessment(
            score=0.25,
            decision=risk_pb2.RISK_DECISION_APPROVE,
            model_version="lr-7",
            variant="challenger",
        )


@pytest.mark.parametrize("state", [PaymentState.AUTHORIZED, PaymentState.DECLINED])
def test_an_unscored_payment_has_no_assessment_anywhere(state: PaymentState) -> None:
    payment = _payment(state, None)
    assert risk_assessment_to_pb(None) is None
    assert not payment_to_pb(payment).HasField("risk_assessment")  # type: ignore[union-attr]
    [event] = events_of([payment])
    assert not event.payload.HasField("risk_assessment")
