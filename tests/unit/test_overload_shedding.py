"""The in-flight bound, what a shed call carries, and the clients' retry policy."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from ordermesh_client.channels import service_config
from ordermesh_platform.errors import Overloaded
from ordermesh_platform.grpc_errors import RETRY_PUSHBACK_KEY, to_grpc_status
from ordermesh_platform.interceptors import InFlightLimit, is_open


def test_the_limit_admits_up_to_its_bound_then_sheds() -> None:
    limit = InFlightLimit("order", 2, 0.2)
    limit.enter("/m")
    limit.enter("/m")
    with pytest.raises(Overloaded) as raised:
        limit.enter("/m")
    assert raised.value.metadata == {"service": "order", "limit": "2"}
    assert (limit.in_flight, limit.shed) == (2, 1)
    limit.leave()
    limit.enter("/m")  # a slot freed is a slot taken
    assert limit.in_flight == 2


def test_health_and_reflection_are_never_shed() -> None:
    assert is_open("/grpc.health.v1.Health/Check")
    assert is_open("/grpc.health.v1.Health/Watch")
    assert is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert is_open("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not is_open("/ordermesh.order.v1.OrderService/PlaceOrder")


def test_a_shed_call_is_resource_exhausted_with_error_info_retry_info_and_pushback() -> None:
    status = to_grpc_status(Overloaded("busy", 0.25, {"service": "order", "limit": "8"}))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(status.trailing_metadata)
    assert trailers[RETRY_PUSHBACK_KEY] == "250"
    details = status_pb2.Status.FromString(trailers["grpc-status-details-bin"]).details
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert details[0].Unpack(info)
    assert (info.reason, info.domain) == ("OVERLOADED", "ordermesh")
    assert details[1].Unpack(retry)
    assert retry.retry_delay == duration_pb2.Duration(nanos=250_000_000)


def test_clients_retry_only_safe_codes_within_a_budget_and_a_deadline() -> None:
    config = json.loads(service_config())
    (method,) = config["methodConfig"]
    policy = method["retryPolicy"]
    assert sorted(policy["retryableStatusCodes"]) == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    assert policy["maxAttempts"] <= 3
    assert float(policy["initialBackoff"].rstrip("s")) > 0
    assert float(policy["maxBackoff"].rstrip("s")) <= 1
    assert method["timeout"]
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}
