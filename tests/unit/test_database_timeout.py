"""How long a unit of work may take (Transactions.budget_s): the database timeout,
shortened by the deadline of the call being handled, never below a floor."""

from __future__ import annotations

import pytest

from ordermesh_platform.db import Transactions, create_engine
from ordermesh_platform.deadlines import call_deadline, detached, remaining_s

POSTGRES = "postgresql://postgres@127.0.0.1:1/x"  # never connected to here


@pytest.fixture
async def transactions() -> Transactions:
    return Transactions(create_engine(POSTGRES, 1, statement_timeout_s=5.0), timeout_s=5.0)


async def test_outside_a_call_the_database_timeout_applies(transactions: Transactions) -> None:
    assert remaining_s() is None
    assert transactions.budget_s() == 5.0


async def test_a_call_with_less_time_left_shortens_it(transactions: Transactions) -> None:
    with call_deadline(2.0):
        budget = transactions.budget_s()
    assert budget is not None
    assert 1.0 < budget <= 2.0


async def test_a_call_about_to_expire_still_leaves_the_floor(transactions: Transactions) -> None:
    with call_deadline(0.05):
        assert transactions.budget_s() == Transactions.MIN_CALL_BUDGET_S


async def test_a_call_with_more_time_left_keeps_the_database_timeout(
    transactions: Transactions,
) -> None:
    with call_deadline(60.0):
        assert transactions.budget_s() == 5.0


async def test_work_detached_from_its_call_has_no_call_deadline(
    transactions: Transactions,
) -> None:
    with call_deadline(0.05), detached():
        assert transactions.budget_s() == 5.0
    assert remaining_s() is None


async def test_sqlite_units_of_work_are_not_cut_off(tmp_path: object) -> None:
    sqlite = Transactions(create_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db"), timeout_s=5.0)
    with call_deadline(0.05):
        assert sqlite.budget_s() is None
