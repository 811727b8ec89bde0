"""A unit of work: one transaction, its state changes and the events they cause, committed together.

    async with unit_of_work(pool) as uow:
        await repository.save_order(uow.conn, order)
        uow.publish(event)

The events go into the outbox (``outbox.enqueue``) at the end of the block, inside the transaction, in the
order they were published: the state change and its events commit together, or neither does. A block left by
an exception rolls back and publishes nothing. Publishing nothing costs no statement.

A consumer's handler already runs in a transaction (the one that records its inbox row): ``joining(conn)``
is the same unit of work in that transaction, without opening another one (a savepoint would cost statements).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from tweetshop_contracts import Envelope

from . import outbox


class UnitOfWork:
    """The connection of one open transaction, and the events to enqueue when the work is done."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._events: list[Envelope] = []

    def publish(self, *events: Envelope) -> None:
        """Send these events once the transaction commits (through the outbox, in this order)."""
        self._events.extend(events)

    async def _enqueue(self) -> None:
        events, self._events = self._events, []
        await outbox.enqueue(self.conn, *events)


@asynccontextmanager
async def unit_of_work(pool: asyncpg.Pool) -> AsyncIterator[UnitOfWork]:
    """A new transaction on a connection of ``pool``; what was published is enqueued just before it commits."""
    async with pool.acquire() as conn, conn.transaction(), joining(conn) as uow:
        yield uow


@asynccontextmanager
async def joining(conn: asyncpg.Connection) -> AsyncIterator[UnitOfWork]:
    """The caller's open transaction as a unit of work: what was published is enqueued at the end of the block."""
    uow = UnitOfWork(conn)
    yield uow
    await uow._enqueue()
