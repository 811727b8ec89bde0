"""Read topics as any outside subscriber would, and note when each order's events were published.

One aiokafka consumer per topic, no consumer group: every partition is assigned
and read from the beginning, so nothing published during a run can be missed.

When an event was published is read off the record, not off our own clock when a fetch brought it: its
timestamp (``CreateTime``) is when the producer, the service's outbox relay, handed it to its client, which sends
it at most ``kafka_linger_ms`` later; the watcher takes that later moment, and never a moment after the fetch
that brought it. So a latency is the shop's up to the broker's acknowledgement of the produce request, whatever
the watcher's own fetch wait: it polls slowly (``FETCH_WAIT_MS``), because the embedded broker answers a fetch
only when its wait ends and spends CPU on every partition of every fetch. Until stop 30 it polled every 20 ms
(12 partitions, 600 partition fetches a second, more than the four services together) and took its own clock:
that cost the broker about 0.6 ms of CPU per order at 120 orders/s, counted in the shop's figures, and added
half a fetch wait (~10 ms) to every latency.
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
from aiokafka.structs import ConsumerRecord
from tweetshop_platform.settings import ServiceSettings

OnRecord = Callable[[str, dict[str, object], float], None]

FETCH_WAIT_MS = 200
# The services' relays hand a record to their producer at its CreateTime and send it within their linger (none
# before the setting existed: this file also measures older commits, bench/README.md).
_LINGER = ServiceSettings.model_fields.get("kafka_linger_ms")
LINGER_S = int(_LINGER.default if _LINGER is not None else 0) / 1000
_CREATE_TIME = 0


def published_at(message: ConsumerRecord[bytes, bytes], fetched: float, wall_minus_monotonic: float) -> float:
    """When ``message`` went to the broker, on ``time.monotonic``'s scale: its CreateTime plus the producers'
    linger, and never after ``fetched`` (when our fetch returned it); ``fetched`` itself for a record without a
    CreateTime."""
    created_ms: int = message.timestamp
    if message.timestamp_type != _CREATE_TIME or created_ms <= 0:
        return fetched
    return min(fetched, created_ms / 1000 - wall_minus_monotonic + LINGER_S)


@dataclass
class OrderTimes:
    """When each order's interesting events were published (``time.monotonic`` seconds; ``published_at``)."""

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
                # Arrivals are timed by the records' own timestamps (published_at), not by this wait.
                fetch_max_wait_ms=FETCH_WAIT_MS,
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
            batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=5000)
            fetched = time.monotonic()
            wall_minus_monotonic = time.time() - fetched
            for messages in batch.values():
                for message in messages:
                    try:
                        value = json.loads(message.value or b"{}")
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        self.records += 1
                        self.on_record(topic, value, published_at(message, fetched, wall_minus_monotonic))

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
