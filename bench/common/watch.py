"""Read topics as any outside subscriber would, and note when each order's events arrive.

One aiokafka consumer per topic, no consumer group: every partition is assigned
and read from the beginning, so nothing published during a run can be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

OnRecord = Callable[[str, dict[str, object], float], None]


@dataclass
class OrderTimes:
    """When each order's interesting events reached our consumer (``time.monotonic`` seconds)."""

    paid: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    shipped: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # Several PaymentIntent ids for one order on OrderPaid events would be a double charge.
    intents: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def on_record(self, _topic: str, value: dict[str, object], arrived: float) -> None:
        """Record one decoded event."""
        event_type = value.get("event_type")
        order_id = value.get("order_id")
        if not isinstance(order_id, str):
            return
        if event_type == "OrderPaid":
            self.paid[order_id].append(arrived)
            intent = value.get("payment_intent_id")
            if isinstance(intent, str):
                self.intents[order_id].add(intent)
        elif event_type == "ShipmentCreated":
            self.shipped[order_id].append(arrived)
        elif event_type in ("OrderPaymentFailed", "OrderCancelled"):
            self.failed[order_id].append(arrived)

    def done(self, order_id: str) -> bool:
        """Paid and shipped (or failed for good)."""
        return (order_id in self.paid and order_id in self.shipped) or order_id in self.failed


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {topic} has no partitions after {timeout:.0f} s")
        await asyncio.sleep(0.2)


class TopicWatcher:
    """Reads ``topics`` from their beginning in the background and hands each JSON value to ``on_record``."""

    def __init__(self, bootstrap: str, topics: Iterable[str], on_record: OnRecord) -> None:
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.on_record = on_record
        self.records = 0
        self._consumers: list[AIOKafkaConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout: float = 30.0) -> None:
        """Assign every partition of every topic, from the beginning, and start reading."""
        for topic in self.topics:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # Return as soon as anything is there: the arrival time is what we measure.
                fetch_max_wait_ms=20,
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await consumer.start()
            self._consumers.append(consumer)
            tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic, timeout))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._tasks.append(asyncio.create_task(self._read(topic, consumer), name=f"watch-{topic}"))

    async def _read(self, topic: str, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            arrived = time.monotonic()
            for messages in batch.values():
                for message in messages:
                    try:
                        value = json.loads(message.value or b"{}")
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        self.records += 1
                        self.on_record(topic, value, arrived)

    async def stop(self) -> None:
        """Stop reading and close the consumers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
