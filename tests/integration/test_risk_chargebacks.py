"""Chargebacks as labels, on PostgreSQL, a real broker and real gRPC: the simulated
provider charges back the fraud token's payment after its delay, across a restart;
payment keeps one label and one PaymentChargedBack however often it is reported; and
`ordermesh risk report` and `ordermesh risk train` read payment's own records."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from ordermesh.common.v1 import money_pb2
from ordermesh.events.v1 import events_pb2
from ordermesh.payment.v1 import payment_pb2 as pb
from ordermesh.payment.v1 import payment_pb2_grpc
from ordermesh_cli.main import app
from ordermesh_cli.registry import load_service
from ordermesh_messaging.events import TOPICS
from ordermesh_payment.app import service
from ordermesh_payment.risk.decision_log import DecisionLog
from ordermesh_payment.risk.events import Chargeback, PaymentOutcome, write_events
from ordermesh_payment.risk.labels import ChargebackLabels
from ordermesh_payment.risk.recorded import recorded_events
from ordermesh_payment.risk.scoring import RiskDecision
from ordermesh_payment.risk.settings import RiskSettings
from ordermesh_payment.risk.simulate import SimulationSettings, Simulator
from ordermesh_payment.risk.training import TrainingSettings, load_log, training_data
from ordermesh_payment.store import (
    inbox,
    risk_chargebacks,
    risk_decisions,
    simulated_psp_chargebacks,
)
from ordermesh_platform.db import create_engine
from ordermesh_platform.migrations import upgrade_to_head
from tests.support.broker import Broker, events_on, running_broker
from tests.support.outbox import until_outbox_empty
from tests.support.services import running_service

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    Stub = payment_pb2_grpc.PaymentServiceAsyncStub

DELAY_S = 1.0


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with running_broker() as b:
        yield b


@asynccontextmanager
async def _payment(database: str, bootstrap: str) -> AsyncIterator[Stub]:
    async with (
        running_service(
            load_service("payment"),
            database,
            kafka_bootstrap=bootstrap,
            consumer_session_timeout_s=2.0,  # the group is joined within a second
            risk_enabled=True,  # the rules decide: the decision log is kept
            psp_chargeback_delay_s=DELAY_S,
            psp_chargeback_poll_s=0.1,
        ) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def _authorize(order_id: str, token: str) -> pb.AuthorizePaymentRequest:
    return pb.AuthorizePaymentRequest(
        order_id=order_id,
        customer_id=f"c-{order_id}",
        amount=money_pb2.Money(amount_minor=4200, currency="EUR"),
        payment_token=token,
    )


async def _until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_the_fraud_tokens_payment_is_charged_back_across_a_restart_and_labelled_once(
    pg_database: str, broker: Broker, tmp_path: Path
) -> None:
    # First without a broker (nothing reachable there): the provider's ledger alone
    # must carry the chargeback over the restart.
    async with _payment(pg_database, "127.0.0.1:1") as stub:
        await stub.AuthorizePayment(_authorize("cb1", "tok_fraud_1"))
        await stub.AuthorizePayment(_authorize("cb2", "tok_ok"))
        await stub.AuthorizePayment(_authorize("cb3", "tok_fraud_3"))
        await stub.VoidPayment(pb.VoidPaymentRequest(order_id="cb3"))  # no money left
    engine = create_engine(pg_database)
    ledger = simulated_psp_chargebacks
    try:
        # Stopped before the delay: the chargeback waits in the provider's ledger.
        async with engine.connect() as conn:
            pending = (await conn.execute(select(ledger.c.order_id, ledger.c.reported_at))).all()
        assert [tuple(row) for row in pending] == [("cb1", None)]

        async def labelled() -> bool:
            async with engine.connect() as conn:
                return bool(await conn.scalar(select(func.count()).select_from(risk_chargebacks)))

        async def charged_back() -> list[events_pb2.PaymentChargedBack]:
            await until_outbox_empty(engine, 20)
            found = await events_on(broker.bootstrap, TOPICS["payment"])
            return [e for _, e in found.values() if isinstance(e, events_pb2.PaymentChargedBack)]

        async with _payment(pg_database, broker.bootstrap):
            await _until(labelled)  # reported after the restart, consumed by payment
            [event] = await charged_back()
            assert (event.order_id, event.customer_id) == ("cb1", "c-cb1")
            assert (event.amount.amount_minor, event.reason) == (4200, "fraudulent")
            # The provider reports it again: a second event on the wire, the same label.
            async with engine.begin() as conn:
                await conn.execute(update(ledger).values(reported_at=None))

            async def both_consumed() -> bool:
                # Both reports, each under its own event id, found in payment's inbox.
                reports = list(await events_on(broker.bootstrap, TOPICS["chargeback"], 2))
                async with engine.connect() as conn:
                    handled = await conn.scalar(
                        select(func.count()).select_from(inbox).where(inbox.c.event_id.in_(reports))
                    )
                return handled == 2

            await _until(both_consumed)
            assert len(await charged_back()) == 1
        async with engine.connect() as conn:
            labels = (await conn.execute(select(risk_chargebacks.c.order_id))).scalars().all()
        assert labels == ["cb1"]
    finally:
        await engine.dispose()

    # `report` reads those labels from payment's database (no --chargebacks file).
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["risk", "report", "--maturity-days", "0", "--out", str(tmp_path / "report"),
         "--database-url", pg_database],
        env={"ORDERMESH_RISK_MIN_SEGMENT_GENUINE": "1"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [variant] = json.loads(result.output[result.output.index("[") :])
    customers = {
        s["segment"]: (s["orders"], s["genuine"])
        for s in variant["fairness"]["segments"]
        if s["segmentation"] == "customer"
    }
    assert customers == {"new": (3, 2)}  # cb1 charged back


async def test_training_from_payments_records_equals_training_from_the_same_log(
    pg_database: str, tmp_path: Path
) -> None:
    events, _ = Simulator(
        SimulationSettings(orders=1200, fraud_share=0.06, days=20, chargeback_delay_days=(2, 6))
    ).run()
    write_events(tmp_path / "events.jsonl", events)
    await upgrade_to_head(service.migrations, pg_database, service.name)
    engine = create_engine(pg_database)
    outcomes = [e for e in events if isinstance(e, PaymentOutcome)]
    decided = {o.attempt.order_id: RiskDecision(0.1, False, 0.4, "rules", "") for o in outcomes}
    try:
        async with engine.begin() as conn:
            await DecisionLog(risk_decisions).add(conn, outcomes, decided)
            await ChargebackLabels(risk_chargebacks).add(
                conn, [(e, "EUR", "fraudulent") for e in events if isinstance(e, Chargeback)]
            )
        async with engine.connect() as conn:
            recorded = await recorded_events(conn, risk_decisions, risk_chargebacks)
    finally:
        await engine.dispose()
    definition = RiskSettings().feature_definition()
    settings = TrainingSettings(maturity_days=6)
    from_log, window = training_data(load_log(tmp_path), definition, settings)
    from_database, database_window = training_data(recorded, definition, settings)
    assert sum(from_log.labels) > 10
    assert from_database.labels == from_log.labels
    assert [r.vector for r in from_database.rows] == [r.vector for r in from_log.rows]
    assert [r.attempt for r in from_database.rows] == [r.attempt for r in from_log.rows]
    assert database_window == window

    # The command, end to end: trains and writes the artifacts from the database.
    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["risk", "train", "--database-url", pg_database, "--out", str(tmp_path / "models"),
         "--maturity-days", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "models").iterdir()} >= {"logistic.json", "lightgbm.json"}
