"""Test helpers that talk to the real broker: publish raw or contract events, read topics from the start."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from tweetshop_contracts import Envelope, decode_event


@dataclass(frozen=True)
class Record:
    """One message as any Kafka client sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def event(self, logical_topic: str) -> Envelope:
        """The value decoded with the contract of ``logical_topic``."""
        return decode_event(logical_topic, self.value)


async def publish_raw(
    bootstrap: str, topic: str, value: bytes, *, key: bytes | None = None, headers: dict[str, str] | None = None
) -> None:
    """Publish bytes exactly as given (garbage included)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, value, key=key, headers=[(k, v.encode()) for k, v in (headers or {}).items()]
        )
    finally:
        await producer.stop()


async def publish_events(bootstrap: str, namespace: str, *events: Envelope) -> None:
    """Publish contract events as a producing service would (key, headers, JSON value)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                namespace + event.topic(),
                event.to_bytes(),
                key=event.key().encode(),
                headers=[(k, v.encode()) for k, v in event.headers().items()],
            )
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool] | None = None,
    timeout: float = 30.0,
    quiet_ms: int | None = None,
) -> list[Record]:
    """Every message of ``topic`` from the beginning, waiting until ``until(records)`` holds or time runs out.

    Without ``until`` it returns what is there once the end offsets are reached. With ``quiet_ms`` it returns
    once a fetch of that long brings nothing, and a topic that does not exist is empty: for a topic that has
    stopped growing on Tansu, which answers ListOffsets with less than the real end once a partition holds
    multi-record batches (10 records in: end offset 7 or 9); AssertionError if it still grows at ``timeout``.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = time.monotonic() + timeout
        partitions = await _partitions(consumer, topic, deadline, wait=quiet_ms is None)
        if not partitions:
            return records
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while time.monotonic() < deadline:
            if quiet_ms is not None:
                batch = await consumer.getmany(timeout_ms=quiet_ms, max_records=10_000)
                if not batch:
                    return records
            else:
                batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(
                    Record(
                        m.topic,
                        m.partition,
                        m.offset,
                        m.key,
                        m.value or b"",
                        {k: v.decode(errors="replace") for k, v in (m.headers or ())},
                    )
                    for m in messages
                )
            if until is not None and until(records):
                return records
            if until is None and quiet_ms is None and not batch:
                ends = await consumer.end_offsets(tps)
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    return records
        if quiet_ms is not None:
            raise AssertionError(f"{topic} did not stop growing in {timeout:.0f} s")
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str, deadline: float, *, wait: bool) -> set[int]:
    """The partitions of ``topic``; with ``wait``, polled until it exists or the deadline passes."""
    if not wait:
        await consumer._client.force_metadata_update()
        return consumer.partitions_for_topic(topic) or set()
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if partitions is not None:
            return set(partitions)
        if time.monotonic() > deadline:
            return set()
        await asyncio.sleep(0.2)


def events_of(records: list[Record], logical_topic: str) -> list[Envelope]:
    """Decode every record with the topic's contract (fails on anything that breaks it)."""
    return [r.event(logical_topic) for r in records]


async def read_events(
    bootstrap: str,
    topic: str,
    logical_topic: str,
    *,
    until: Callable[[list[Envelope]], bool] | None = None,
    timeout: float = 30.0,
) -> list[Envelope]:
    """``read_topic`` decoded with the contract of ``logical_topic``; ``until`` sees the events."""
    check = None if until is None else (lambda records: until(events_of(records, logical_topic)))
    return events_of(await read_topic(bootstrap, topic, until=check, timeout=timeout), logical_topic)
