"""The delivery rules of a reliable subscriber, on FastStream's in-memory broker with a fake database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from tweetshop_contracts import OrderPlaced, topics
from tweetshop_devstack.testing import order_placed
from tweetshop_platform.consumer import PermanentError, ReliableSubscriber
from tweetshop_platform.kafka import TopicNames


class FakeConnection:
    """Just enough of asyncpg.Connection: a transaction and the inbox insert."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        staged = set(self.db.inbox)
        try:
            yield
        except BaseException:
            self.db.inbox = staged  # rolled back with the failed handler
            raise

    async def fetch(self, _sql: str, consumer: str, event_ids: list[uuid.UUID], *_: Any) -> list[dict[str, Any]]:
        rows = []
        for event_id in event_ids:
            if (consumer, event_id) not in self.db.inbox:
                self.db.inbox.add((consumer, event_id))
                rows.append({"event_id": event_id})
        return rows


class FakeDatabase:
    def __init__(self) -> None:
        self.inbox: set[tuple[str, uuid.UUID]] = set()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self)


def placed(event_id: uuid.UUID | None = None) -> OrderPlaced:
    return order_placed(event_id=event_id, correlation_id="corr-1")


class Harness:
    def __init__(self, *, fail_times: int = 0, error: Exception | None = None) -> None:
        self.broker = KafkaBroker()
        self.db = FakeDatabase()
        self.applied: list[OrderPlaced] = []
        self.attempts = 0
        self.fail_times = fail_times
        self.error = error or RuntimeError("boom")
        self.parked: list[tuple[bytes, dict[str, str]]] = []
        ReliableSubscriber(
            broker=self.broker,
            pool=self.db,  # type: ignore[arg-type]
            topics=TopicNames(""),
            topic=topics.CHECKOUT_ORDERS,
            group_id="test.orders",
            handler=self.handle,
            max_retries=2,
            retry_backoff=0,
        )

        @self.broker.subscriber(topics.CHECKOUT_ORDERS + ".dlq")
        async def park(msg: KafkaMessage) -> None:
            self.parked.append((msg.body, {k: str(v) for k, v in msg.headers.items()}))

    async def handle(self, _conn: Any, event: OrderPlaced) -> None:
        self.attempts += 1
        if self.attempts <= self.fail_times:
            raise self.error
        self.applied.append(event)


async def test_an_event_is_applied_once_even_when_delivered_twice() -> None:
    h = Harness()
    event = placed()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(event.to_bytes(), topics.CHECKOUT_ORDERS)
        await broker.publish(event.to_bytes(), topics.CHECKOUT_ORDERS)
    assert [e.event_id for e in h.applied] == [event.event_id]
    assert h.parked == []


async def test_a_failing_handler_is_retried_and_then_succeeds_without_dead_lettering() -> None:
    h = Harness(fail_times=2)
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(placed().to_bytes(), topics.CHECKOUT_ORDERS)
    assert h.attempts == 3 and len(h.applied) == 1
    assert h.parked == []


async def test_a_handler_that_keeps_failing_parks_the_message_with_the_error_in_headers() -> None:
    h = Harness(fail_times=100)
    event = placed()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(event.to_bytes(), topics.CHECKOUT_ORDERS, headers={"correlation_id": "corr-1"})
    assert h.attempts == 3, "one try plus max_retries=2"
    [(value, headers)] = h.parked
    assert value == event.to_bytes()
    assert headers["dlq_error"] == "boom"
    assert headers["dlq_error_type"] == "RuntimeError"
    assert headers["dlq_attempts"] == "3"
    assert headers["dlq_consumer_group"] == "test.orders"
    assert headers["correlation_id"] == "corr-1"
    assert h.db.inbox == set(), "the failed attempts left nothing behind"


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("cannot ever apply"),
        asyncpg.NumericValueOutOfRangeError("integer out of range"),
        asyncpg.DataError("invalid input for query argument $1: 2147483648 (value out of int32 range)"),
    ],
    ids=["PermanentError", "value out of a column's range", "argument asyncpg cannot encode"],
)
async def test_a_permanent_error_is_parked_without_retrying(error: Exception) -> None:
    h = Harness(fail_times=100, error=error)
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(placed().to_bytes(), topics.CHECKOUT_ORDERS)
    assert h.attempts == 1
    [(_, headers)] = h.parked
    assert headers["dlq_error_type"] == type(error).__name__
    assert headers["dlq_attempts"] == "1"


async def test_a_transient_error_is_retried_past_the_bounded_retries_and_never_parked() -> None:
    h = Harness(fail_times=4, error=asyncpg.ConnectionDoesNotExistError("connection was closed"))
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(placed().to_bytes(), topics.CHECKOUT_ORDERS)
    assert h.attempts == 5, "more than one try plus max_retries=2: the database was gone, not the message bad"
    assert len(h.applied) == 1 and h.parked == []


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'{"event_type": "OrderPlaced"}',
        placed().to_bytes().replace(b'"quantity":1', b'"quantity":-1'),
    ],
)
async def test_a_message_that_breaks_the_contract_is_parked_at_once(value: bytes) -> None:
    h = Harness()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(value, topics.CHECKOUT_ORDERS)
    assert h.attempts == 0
    assert [v for v, _ in h.parked] == [value]


async def test_an_event_type_from_a_newer_producer_is_skipped_not_parked() -> None:
    h = Harness()
    newer = placed().to_bytes().replace(b'"OrderPlaced"', b'"OrderGiftWrapped"')
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(newer, topics.CHECKOUT_ORDERS)
    assert h.attempts == 0 and h.parked == []


class FlakyOnce(Harness):
    """Fails the first time it sees one chosen event, then applies it."""

    def __init__(self, flaky: uuid.UUID) -> None:
        super().__init__()
        self.flaky = flaky
        self.seen: list[uuid.UUID] = []

    async def handle(self, _conn: Any, event: OrderPlaced) -> None:
        self.seen.append(event.event_id)
        if event.event_id == self.flaky and self.seen.count(self.flaky) == 1:
            raise RuntimeError("boom")
        self.applied.append(event)


async def test_a_batch_is_applied_in_order_once_with_duplicates_inside_it_skipped() -> None:
    h = Harness()
    first, second = placed(), placed()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish_batch(first.to_bytes(), second.to_bytes(), first.to_bytes(), topic=topics.CHECKOUT_ORDERS)
    assert [e.event_id for e in h.applied] == [first.event_id, second.event_id]
    assert h.db.inbox == {("test.orders", first.event_id), ("test.orders", second.event_id)}
    assert h.parked == []


async def test_one_failing_event_rolls_its_batch_back_and_the_batch_is_handled_one_by_one() -> None:
    events = [placed(), placed(), placed()]
    h = FlakyOnce(events[1].event_id)
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish_batch(*(e.to_bytes() for e in events), topic=topics.CHECKOUT_ORDERS)
    ids = [e.event_id for e in events]
    # The batch try applied the first, failed on the second and was rolled back whole: the first is applied again
    # (its inbox row went with the rollback), the second is retried once, then the third; each applied once.
    assert h.seen == [ids[0], ids[1], ids[0], ids[1], ids[2]]
    assert [e.event_id for e in h.applied[-3:]] == ids
    assert h.db.inbox == {("test.orders", i) for i in ids}
    assert h.parked == []


async def test_a_bad_message_in_a_batch_is_parked_and_the_rest_applied() -> None:
    h = Harness()
    good, other = placed(), placed()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish_batch(good.to_bytes(), b"not json", other.to_bytes(), topic=topics.CHECKOUT_ORDERS)
    assert [e.event_id for e in h.applied] == [good.event_id, other.event_id]
    assert [v for v, _ in h.parked] == [b"not json"]
