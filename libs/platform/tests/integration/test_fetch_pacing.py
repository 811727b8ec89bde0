"""A consumer off the purchase's path asks the real broker less often once it finds nothing, and at once as
often again when records come (consumer.FetchPacer); a reliable consumer asks for its minimum bytes
(``kafka_fetch_min_bytes``): read off the fetch requests aiokafka puts on the wire."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.protocol.fetch import FetchRequest
from faststream.kafka import KafkaBroker
from tweetshop_contracts import topics
from tweetshop_platform.consumer import FetchPacer, ReliableSubscriber, _next_batch
from tweetshop_platform.kafka import TopicNames, ensure_topics
from tweetshop_platform.settings import ServiceSettings

ACTIVE_MS, QUIET_MS = 20, 600


def watch_fetches(consumer: AIOKafkaConsumer, field: str) -> list[int]:
    """A field (``_max_wait_ms``, ``_min_bytes``) of every fetch request the consumer sends from now on, in order."""
    seen: list[int] = []
    client = consumer._client
    send = client.send

    async def counted(node_id: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            seen.append(getattr(request, field))
        return await send(node_id, request, **kwargs)

    client.send = counted
    return seen


def watch_fetch_waits(consumer: AIOKafkaConsumer) -> list[int]:
    """The max wait of every fetch request the consumer sends from now on, in order."""
    return watch_fetches(consumer, "_max_wait_ms")


async def batch_until(consumer: AIOKafkaConsumer, pacer: FetchPacer, done: Any, limit_s: float = 30.0) -> list[Any]:
    records: list[Any] = []
    async with asyncio.timeout(limit_s):
        while not done(records):
            records += await _next_batch(consumer, timeout_ms=200, max_records=100, pacer=pacer)
    return records


async def test_a_quiet_consumer_fetches_with_the_long_wait_and_a_record_brings_the_short_one_back(
    kafka_bootstrap: str,
) -> None:
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, [topic], 1)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic}.group",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=ACTIVE_MS,
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await consumer.start()
    await producer.start()
    try:
        waits = watch_fetch_waits(consumer)
        pacer = FetchPacer(active_ms=ACTIVE_MS, quiet_ms=QUIET_MS, quiet_after_s=0.5)

        # Quiet: after half a second without a record, the requests ask the broker to wait the long time.
        await batch_until(consumer, pacer, lambda _: waits.count(QUIET_MS) >= 3)
        assert waits[0] == ACTIVE_MS
        assert waits[-1] == QUIET_MS
        assert consumer._fetcher._fetch_max_wait_ms == QUIET_MS

        # A record still arrives during a long wait, and the next requests are short again.
        await producer.send_and_wait(topic, b"first")
        got = await batch_until(consumer, pacer, lambda r: len(r) >= 1)
        assert [r.value for r in got] == [b"first"]
        quiet_sent = len(waits)
        await batch_until(consumer, pacer, lambda _: len(waits) >= quiet_sent + 3)
        assert waits[-1] == ACTIVE_MS
        assert pacer.wait_ms == ACTIVE_MS
    finally:
        await producer.stop()
        await consumer.stop()


async def _ignore(_conn: Any, _event: Any) -> None:
    raise AssertionError("no record is sent in this test")


async def test_a_reliable_consumer_asks_the_broker_for_its_minimum_bytes_per_fetch(kafka_bootstrap: str) -> None:
    namespace = f"minbytes-{uuid.uuid4().hex[:8]}."
    names = TopicNames(namespace)
    await ensure_topics(kafka_bootstrap, [names.physical(topics.CHECKOUT_ORDERS)], 1)
    broker = KafkaBroker(kafka_bootstrap, logger=None, apply_types=False)
    min_bytes = int(ServiceSettings.model_fields["kafka_fetch_min_bytes"].default)
    assert min_bytes > 1  # the services' default batches under load
    ReliableSubscriber(
        broker=broker,
        pool=None,  # type: ignore[arg-type]  # no record comes, so the database is never asked
        topics=names,
        topic=topics.CHECKOUT_ORDERS,
        group_id=f"{namespace}group",
        handler=_ignore,
        fetch_max_wait_ms=ACTIVE_MS,
        fetch_min_bytes=min_bytes,
    )
    await broker.start()
    try:
        (subscriber,) = broker.subscribers
        consumer = subscriber.consumer  # type: ignore[attr-defined]
        asked = watch_fetches(consumer, "_min_bytes")
        async with asyncio.timeout(30):
            while len(asked) < 3:
                await asyncio.sleep(0.05)
        assert set(asked) == {min_bytes}
    finally:
        await broker.stop()
