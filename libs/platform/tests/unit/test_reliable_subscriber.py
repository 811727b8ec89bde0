"""The delivery rules of a reliable subscriber, on FastStream's in-memory broker with a fake database."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from tweetshop_contracts import Destination, OrderPaid, OrderPlaced, StockReserved, topics
from tweetshop_contracts.system import SYSTEM, DeclarationError, Group, Reads, Service
from tweetshop_devstack.testing import order_paid, order_placed
from tweetshop_platform import metrics
from tweetshop_platform.consumer import PermanentError, ReliableSubscriber, handled_types, handles, together
from tweetshop_platform.kafka import TopicNames, create_broker
from tweetshop_platform.runtime import DeclarationMismatch, Fetch, fetch_of, plan_subscriptions
from tweetshop_platform.settings import ServiceSettings


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
        self.acquired = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        self.acquired += 1
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


class Together(Harness):
    """A handler with a batch form (``@together``) that fails the first time it is given one chosen event."""

    def __init__(self, flaky: uuid.UUID | None = None) -> None:
        self.calls: list[list[uuid.UUID]] = []
        self.flaky = flaky

        async def in_batch(_conn: Any, events: list[Any]) -> None:
            self.calls.append([e.event_id for e in events])
            if self.flaky in self.calls[-1] and sum(self.flaky in c for c in self.calls) == 1:
                raise RuntimeError("boom")
            self.applied.extend(events)

        @together(in_batch)
        async def one(_conn: Any, event: Any) -> None:
            raise AssertionError("the batch form is used")

        self.handle = one  # type: ignore[method-assign]
        super().__init__()


async def test_a_handler_with_a_batch_form_gets_the_batchs_new_events_in_one_call() -> None:
    h = Together()
    first, second, third = placed(), placed(), placed()
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish(first.to_bytes(), topics.CHECKOUT_ORDERS)
        batch = (first, second, first, third)
        await broker.publish_batch(*(e.to_bytes() for e in batch), topic=topics.CHECKOUT_ORDERS)
    ids = [e.event_id for e in (first, second, third)]
    # The first alone; then the batch without what the inbox has (the first, twice), in order, in one call.
    assert h.calls == [[ids[0]], ids[1:]]
    assert [e.event_id for e in h.applied] == ids
    assert h.parked == []


async def test_a_failing_batch_form_is_rolled_back_and_given_its_events_one_at_a_time() -> None:
    events = [placed(), placed(), placed()]
    h = Together(flaky=events[1].event_id)
    async with TestKafkaBroker(h.broker) as broker:
        await broker.publish_batch(*(e.to_bytes() for e in events), topic=topics.CHECKOUT_ORDERS)
    ids = [e.event_id for e in events]
    assert h.calls == [ids, [ids[0]], [ids[1]], [ids[2]]]
    assert [e.event_id for e in h.applied[-3:]] == ids
    assert h.db.inbox == {("test.orders", i) for i in ids}
    assert h.parked == []


class OnlyPaid(Harness):
    """A handler that acts on OrderPaid alone (as tracking's does on OrderPaid, refunds and cancellations)."""

    def __init__(self) -> None:
        self.broker = KafkaBroker()
        self.db = FakeDatabase()
        self.applied: list[OrderPlaced] = []
        self.attempts = 0
        self.fail_times = 0
        self.parked: list[tuple[bytes, dict[str, str]]] = []

        @handles(OrderPaid)
        async def on_paid(_conn: Any, event: Any) -> None:
            self.attempts += 1
            self.applied.append(event)

        self.subscriber = ReliableSubscriber(
            broker=self.broker,
            pool=self.db,  # type: ignore[arg-type]
            topics=TopicNames(""),
            topic=topics.CHECKOUT_ORDERS,
            group_id="test.orders",
            handler=on_paid,
            max_retries=2,
            retry_backoff=0,
        )

        @self.broker.subscriber(topics.CHECKOUT_ORDERS + ".dlq")
        async def park(msg: KafkaMessage) -> None:
            self.parked.append((msg.body, {k: str(v) for k, v in msg.headers.items()}))


def paid_order() -> OrderPaid:
    destination = Destination(city="Paris", country="FR", lat=48.86, lon=2.35)
    return order_paid(uuid.uuid4(), destination=destination)


def ignored_count() -> float:
    return metrics.MESSAGES_IGNORED.labels(topics.CHECKOUT_ORDERS, "on_paid")._value.get()


async def test_events_a_handler_does_not_handle_are_skipped_without_an_inbox_row_and_the_rest_applied() -> None:
    h = OnlyPaid()
    first, paid, last = placed(), paid_order(), placed()
    before = ignored_count()
    async with TestKafkaBroker(h.broker) as broker:
        for event in (first, paid):  # with the header the outbox relay sets: the first is skipped unread
            await broker.publish(event.to_bytes(), topics.CHECKOUT_ORDERS, headers=event.headers())
        await broker.publish(last.to_bytes(), topics.CHECKOUT_ORDERS)  # no header: decoded, then skipped
    assert [e.event_id for e in h.applied] == [paid.event_id]
    assert h.db.inbox == {("test.orders", paid.event_id)}, "no inbox row for an event the handler ignores"
    assert h.parked == []
    assert ignored_count() - before == 2
    assert h.db.acquired == 1, "one transaction, for the OrderPaid: none for what was skipped"


async def test_an_ignored_type_in_the_header_is_not_read_but_garbage_without_it_is_still_parked() -> None:
    h = OnlyPaid()
    async with TestKafkaBroker(h.broker) as broker:
        # Its header says a type this handler never acts on: its value cannot matter here, so it is not read.
        await broker.publish(b"not json", topics.CHECKOUT_ORDERS, headers={"event_type": "OrderPlaced"})
        # A type the topic does not define, in the header, is no reason to skip: decoded, and parked.
        await broker.publish(b"not json either", topics.CHECKOUT_ORDERS, headers={"event_type": "OrderGiftWrapped"})
        await broker.publish(b"[1]", topics.CHECKOUT_ORDERS, headers={"event_type": "OrderPaid"})
        newer = placed().to_bytes().replace(b'"OrderPlaced"', b'"OrderGiftWrapped"')
        await broker.publish(newer, topics.CHECKOUT_ORDERS)
    assert [v for v, _ in h.parked] == [b"not json either", b"[1]"]
    assert h.applied == [] and h.db.inbox == set() and h.db.acquired == 0


def test_handles_takes_types_of_one_topic_and_the_subscriber_refuses_it_for_another() -> None:
    with pytest.raises(ValueError, match="one topic"):
        handles(OrderPaid, StockReserved)
    with pytest.raises(ValueError, match="one topic"):
        handles()

    @handles(StockReserved)
    async def on_reserved(_conn: Any, _event: Any) -> None:
        return None

    assert handled_types(on_reserved, topics.CATALOG_RESERVATIONS) == {"StockReserved"}
    with pytest.raises(ValueError, match=topics.CATALOG_RESERVATIONS):
        ReliableSubscriber(
            broker=KafkaBroker(),
            pool=FakeDatabase(),  # type: ignore[arg-type]
            topics=TopicNames(""),
            topic=topics.CHECKOUT_ORDERS,
            group_id="test.orders",
            handler=on_reserved,
        )


def _reading_orders(*handles: str) -> Service:
    group = Group("orders", (Reads(topics.CHECKOUT_ORDERS, "ships paid orders", handles=handles),))
    return Service("returns", port=8005, package="returns", settings="returns.config:Settings", groups=(group,))


@handles(OrderPaid)
async def _on_paid(_conn: Any, _event: Any) -> None:
    return None


async def _on_any(_conn: Any, _event: Any) -> None:
    return None


def test_the_runtime_refuses_a_handler_whose_handles_differs_from_the_declaration() -> None:
    (planned,) = plan_subscriptions(_reading_orders("OrderPaid"), {"orders": _on_paid})
    assert planned.handler is _on_paid
    plan_subscriptions(_reading_orders(), {"orders": _on_any})
    with pytest.raises(DeclarationMismatch, match=r"acts on OrderPaid of checkout\.orders\.v1"):
        plan_subscriptions(_reading_orders(), {"orders": _on_paid})
    with pytest.raises(DeclarationMismatch, match="the declaration says OrderPaid"):
        plan_subscriptions(_reading_orders("OrderPaid"), {"orders": _on_any})


def test_the_declaration_refuses_an_event_type_its_topic_does_not_have() -> None:
    tracking = SYSTEM.service("tracking")
    odd = dataclasses.replace(tracking, groups=_reading_orders("StockReserved", "OrderPaid").groups)
    with pytest.raises(DeclarationError, match=r"handles StockReserved, which is no event type of checkout\.orders"):
        dataclasses.replace(SYSTEM, services=tuple(odd if s is tracking else s for s in SYSTEM.services))


async def test_the_runtimes_broker_hands_each_batch_to_the_subscriber_without_a_worker_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FastStream's dependency injection resolved a ``KafkaMessage`` parameter in a worker thread for every batch
    (4-5 % of a consumer-heavy service's CPU); the runtime's broker injects nothing and the subscriber needs none."""
    import anyio.to_thread

    async def no_worker_thread(*_: Any, **__: Any) -> Any:
        raise AssertionError("a worker thread for a batch")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_worker_thread)
    broker = create_broker(ServiceSettings(service_name="catalog"))
    applied: list[OrderPlaced] = []

    async def handle(_conn: Any, event: OrderPlaced) -> None:
        applied.append(event)

    ReliableSubscriber(
        broker=broker,
        pool=FakeDatabase(),  # type: ignore[arg-type]
        topics=TopicNames(""),
        topic=topics.CHECKOUT_ORDERS,
        group_id="test.orders",
        handler=handle,
    )
    event = placed()
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(event.to_bytes(), topics.CHECKOUT_ORDERS)
    assert [e.event_id for e in applied] == [event.event_id]


def test_a_groups_fetch_follows_what_the_declaration_says_of_it() -> None:
    """Read models are answered as soon as a record is there (a new price must not sit out their long wait); the
    other groups wait for ``kafka_fetch_min_bytes``; only the purchase's path never slows down when quiet."""
    settings = ServiceSettings(
        service_name="checkout",
        kafka_fetch_max_wait_ms=100,
        kafka_read_model_fetch_max_wait_ms=500,
        kafka_fetch_min_bytes=65536,
        kafka_quiet_fetch_max_wait_ms=1000,
        kafka_quiet_after_s=5.0,
    )
    assert fetch_of(settings, Group("g", (), read_model=True)) == Fetch(500, 1, (1000, 5.0))
    assert fetch_of(settings, Group("g", ())) == Fetch(100, 65536, (1000, 5.0))
    assert fetch_of(settings, Group("g", (), purchase_path=True)) == Fetch(100, 65536, None)
    assert fetch_of(settings, Group("g", (), patient=True)) == Fetch(500, 1, (1000, 5.0))
    # Every declared read model and patient group of the system gets the long wait and the 1 byte, whatever the
    # service's setting; tracking's orders (shipments of paid orders, no buyer waits on them) is patient.
    for service in SYSTEM.services:
        for group in service.reliable_groups:
            fetch = fetch_of(settings, group)
            long_wait = group.read_model or group.patient
            assert (fetch.min_bytes == 1) is long_wait, f"{service.name}.{group.name}"
            assert (fetch.max_wait_ms == 500) is long_wait, f"{service.name}.{group.name}"
    assert SYSTEM.service("tracking").group("orders").patient
