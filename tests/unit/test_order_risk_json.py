"""The risk assessment as the order keeps it: the proto3 JSON json_format reads and
writes, built field by field."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from ordermesh.common.v1 import risk_pb2
from ordermesh_order.risk_json import assessment_json, assessment_of

ASSESSMENTS = [
    risk_pb2.RiskAssessment(
        score=0.123456789,
        decision=risk_pb2.RISK_DECISION_DECLINE,
        model_version="lightgbm-cf1cdfc00635",
        variant="challenger",
    ),
    risk_pb2.RiskAssessment(score=1e-9, decision=risk_pb2.RISK_DECISION_APPROVE),
    risk_pb2.RiskAssessment(variant="rules"),  # defaults left out
    risk_pb2.RiskAssessment(),
]


def test_the_message_is_flat() -> None:
    # Field by field covers scalars and enums only: a nested or repeated field added
    # to RiskAssessment must be taught to risk_json first.
    for field in risk_pb2.RiskAssessment.DESCRIPTOR.fields:
        assert field.type != FieldDescriptor.TYPE_MESSAGE, field.name
        assert not field.is_repeated, field.name


@pytest.mark.parametrize("assessment", ASSESSMENTS)
def test_an_assessment_round_trips_and_agrees_with_json_format(
    assessment: risk_pb2.RiskAssessment,
) -> None:
    text = assessment_json(assessment)
    assert assessment_of(text) == assessment
    assert json_format.Parse(text, risk_pb2.RiskAssessment()) == assessment
    # What json_format wrote before (the rows already stored) reads the same.
    assert assessment_of(json_format.MessageToJson(assessment, indent=None)) == assessment


def test_no_assessment_is_the_empty_string() -> None:
    assert assessment_json(None) == ""
    assert assessment_of("") is None
