"""A real Kafka-protocol broker (tansu, memory storage) on a loopback port, and ways
to read what reached it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from google.protobuf.message import Message

from ordermesh_cli.broker import start_tansu, wait_for_port
from ordermesh_messaging.cloudevents import header_map
from ordermesh_messaging.inbound import decode_payload
from tests.support.ports import free_port


class Broker:
    def __init__(self, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.proc = port, proc

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Take the broker away without losing what it holds (SIGSTOP ... SIGCONT)."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)


@contextmanager
def running_broker() -> Iterator[Broker]:
    port = free_port()
    proc = start_tansu(port)
    try:
        wait_for_port(port, timeout_s=15)
        yield Broker(port, proc)
    finally:
        proc.kill()
        proc.wait()


async def read_topic(
    bootstrap: str, topic: str, expect: int, timeout_s: float = 30, quiet_s: float = 2.0
) -> list[ConsumerRecord]:
    """Every record of the topic from the start: until ``expect`` records were read and
    the topic stayed quiet, or the timeout. End offsets of the local broker are not
    trusted, so this reads rather than asks."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await asyncio.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for items in batch.values():
                records.extend(items)
                last = time.monotonic()
            if len(records) >= expect and time.monotonic() - last > quiet_s:
                break
        return records
    finally:
        await consumer.stop()


async def events_on(
    bootstrap: str, topic: str, expect: int = 1, timeout_s: float = 30
) -> dict[str, tuple[str, Message]]:
    """The topic's events, decoded, by event id (with their key), in the order read: a
    record the relay sent twice (at least once) carries its event id twice, and counts
    once. The relay deletes what it published, so the topic is where events are read."""
    found: dict[str, tuple[str, Message]] = {}
    for record in await read_topic(bootstrap, topic, expect, timeout_s):
        headers = header_map(record.headers)
        event_id = headers["ce_id"].decode()
        if event_id not in found:
            event = decode_payload(headers["ce_type"].decode(), record.value)
            found[event_id] = ((record.key or b"").decode(), event)
    return found
