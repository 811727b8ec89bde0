"""A consumer off the purchase's path asks the real broker less often once it finds nothing, and at once as
often again when records come (consumer.FetchPacer): read off the fetch requests aiokafka puts on the wire."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.protocol.fetch import FetchRequest
from tweetshop_platform.consumer import FetchPacer, _next_batch
from tweetshop_platform.kafka import ensure_topics

ACTIVE_MS, QUIET_MS = 20, 600


def watch_fetch_waits(consumer: AIOKafkaConsumer) -> list[int]:
    """The max wait of every fetch request the consumer sends from now on, in order."""
    waits: list[int] = []
    client = consumer._client
    send = client.send

    async def counted(node_id: Any, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            waits.append(request._max_wait_ms)
        return await send(node_id, request, **kwargs)

    client.send = counted
    return waits


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
