"""The unit of work that owns the outbox. A use case changes state on the unit's
connection and records the events the change raised; the unit writes them as outbox
rows (one statement, however many) as the last step of its transaction, or, when the
change itself is a set of writes (``UnitOfWork.write``), as part of the same one
statement. So every service writes its events one way: none can forget the outbox, and
none can publish an event whose change did not commit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from ordermesh_messaging.events import DomainEvent
from ordermesh_messaging.outbox import Outbox
from ordermesh_platform.db import Transactions
from ordermesh_platform.writes import Rows, write_together


class UnitOfWork:
    """One transaction in progress, and the events recorded in it so far."""

    def __init__(self, connection: AsyncConnection, outbox: Outbox, single: bool = False) -> None:
        self.connection = connection
        self.events: list[DomainEvent] = []
        self._outbox = outbox
        self._single = single
        self._written = False

    def record(self, events: Iterable[DomainEvent]) -> None:
        self.events.extend(events)

    async def write(self, first: Rows, *then: Rows, events_of_written: bool = False) -> list[Any]:
        """The writes and the events recorded so far, as one statement on PostgreSQL
        (``ordermesh_platform.writes``); the rows ``first`` returned. With
        ``events_of_written``, an event goes out only if its aggregate id is among the
        first column ``first`` returned (an order a conflict left out raised none)."""
        if self._single and self._written:
            raise RuntimeError("a single-statement unit of work writes once")
        self._written = True
        events, self.events = self.events, []
        rows = Rows(
            self._outbox.table,
            self._outbox.rows_of(events),
            only_written="aggregate_id" if events_of_written else "",
        )
        return await write_together(self.connection, first, *then, rows)


class UnitsOfWork:
    """Begins units of work on one service's database, whose events go to its outbox."""

    def __init__(self, transactions: Transactions, outbox: Table) -> None:
        self._transactions = transactions
        self._outbox = Outbox(outbox)

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads (rolled back at the end): nothing to record."""
        return self._transactions()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        """A transaction that, when its block ends without an error, writes the recorded
        events and commits; on an error it rolls back, events and all."""
        async with self._transactions.begin() as connection:
            work = UnitOfWork(connection, self._outbox)
            yield work
            await self._outbox.add(connection, work.events)

    @asynccontextmanager
    async def single(self) -> AsyncIterator[UnitOfWork]:
        """A unit whose change is one ``work.write(...)``, reads around it allowed. On
        PostgreSQL it runs without BEGIN and COMMIT, two round trips of the three a
        one-statement transaction costs: one statement is atomic by itself. (SQLite: a
        transaction, as ``begin``.) It takes no lock a later statement relies on, and
        every event it writes goes in that one statement."""
        async with self._transactions.single_statement() as connection:
            work = UnitOfWork(connection, self._outbox, single=True)
            yield work
            if work.events:
                raise RuntimeError("events recorded after the unit's one write")
