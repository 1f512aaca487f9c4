"""The one Kafka producer construction (ordermesh_messaging.producer): every publisher
(outbox relay, dead letters, DLQ replay, bench) gets a producer with these settings."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from ordermesh_messaging import producer as producer_module
from ordermesh_messaging.producer import DEFAULT_REQUEST_TIMEOUT_S, new_producer, partition_for
from ordermesh_messaging.relay import make_producer
from ordermesh_messaging.settings import KafkaSettings, RelaySettings


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of each producer built, instead of a client."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", lambda **kw: calls.append(kw))
    return calls


def test_a_send_waits_for_every_in_sync_replica(built: list[dict[str, Any]]) -> None:
    new_producer("127.0.0.1:1", request_timeout_s=2.5)
    [kwargs] = built
    assert kwargs["bootstrap_servers"] == "127.0.0.1:1"
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is False  # the local broker refuses it
    assert kwargs["request_timeout_ms"] == 2500


def test_the_relay_takes_its_producer_from_the_settings(built: list[dict[str, Any]]) -> None:
    make_producer(RelaySettings(kafka_bootstrap="127.0.0.1:2", kafka_request_timeout_s=1.5))
    new_producer("127.0.0.1:2", 1.5)
    assert built[0] == built[1]


def test_the_settings_default_is_the_producers() -> None:
    assert KafkaSettings().kafka_request_timeout_s == DEFAULT_REQUEST_TIMEOUT_S


@settings(max_examples=500)
@given(key=st.binary(max_size=80), count=st.integers(min_value=1, max_value=64))
def test_a_key_goes_to_the_partition_any_kafka_client_would_choose(key: bytes, count: int) -> None:
    # aiokafka's partitioner is a port of the Java client's: the reference.
    partitions = list(range(count))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_key_picks_among_the_partitions_given_not_their_positions() -> None:
    given = [3, 7, 9]
    chosen = {partition_for(f"order-{i}".encode(), given) for i in range(50)}
    assert chosen == set(given)
    assert all(
        partition_for(key, given) == DefaultPartitioner()(key, given, given)
        for key in (f"order-{i}".encode() for i in range(50))
    )
