"""The unit of work: a state change and the events it publishes commit together, or neither does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tweetshop_contracts import StockReserved
from tweetshop_platform.uow import joining, unit_of_work


class FakeConnection:
    """Records the statements it is sent and where its transaction begins and ends."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.outbox_ids: list[list[uuid.UUID]] = []

    async def execute(self, sql: str, *args: Any) -> None:
        if "INSERT INTO outbox" in sql:
            self.log.append("outbox")
            self.outbox_ids.append(list(args[0]) if isinstance(args[0], list) else [args[0]])
        else:
            self.log.append(sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.log.append("BEGIN")
        try:
            yield
        except BaseException:
            self.log.append("ROLLBACK")
            raise
        self.log.append("COMMIT")


class FakePool:
    def __init__(self) -> None:
        self.conn = FakeConnection()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield self.conn


def reserved(order_id: uuid.UUID | None = None) -> StockReserved:
    return StockReserved(
        producer="test", correlation_id="c", order_id=order_id or uuid.uuid4(), product_id=uuid.uuid4(), quantity=1
    )


async def test_the_state_change_and_its_events_commit_in_one_transaction_in_the_order_published() -> None:
    pool = FakePool()
    first, second = reserved(), reserved()
    async with unit_of_work(pool) as uow:  # type: ignore[arg-type]
        await uow.conn.execute("UPDATE orders")
        uow.publish(first)
        uow.publish(second)
    assert pool.conn.log == ["BEGIN", "UPDATE orders", "outbox", "COMMIT"]
    assert pool.conn.outbox_ids == [[first.event_id, second.event_id]]


async def test_nothing_published_costs_no_statement() -> None:
    pool = FakePool()
    async with unit_of_work(pool) as uow:  # type: ignore[arg-type]
        await uow.conn.execute("UPDATE orders")
    assert pool.conn.log == ["BEGIN", "UPDATE orders", "COMMIT"]


async def test_a_failed_block_rolls_back_and_publishes_nothing() -> None:
    pool = FakePool()
    with pytest.raises(RuntimeError):
        async with unit_of_work(pool) as uow:  # type: ignore[arg-type]
            uow.publish(reserved())
            raise RuntimeError("refused")
    assert pool.conn.log == ["BEGIN", "ROLLBACK"]


async def test_leaving_the_block_early_still_publishes_what_was_published() -> None:
    pool = FakePool()
    event = reserved()

    async def work() -> str:
        async with unit_of_work(pool) as uow:  # type: ignore[arg-type]
            uow.publish(event)
            return "early"

    assert await work() == "early"
    assert pool.conn.log == ["BEGIN", "outbox", "COMMIT"]


async def test_joining_a_consumers_transaction_opens_no_other_one() -> None:
    conn = FakeConnection()
    event = reserved()
    async with joining(conn) as uow:  # type: ignore[arg-type]
        uow.publish(event)
        assert conn.log == []  # enqueued at the end of the block, still inside the caller's transaction
    assert conn.log == ["outbox"] and conn.outbox_ids == [[event.event_id]]
