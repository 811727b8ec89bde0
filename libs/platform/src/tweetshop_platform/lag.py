"""Consumer lag: how far each consumer group is behind, per topic and partition, from committed and end offsets.

FastStream's metrics have no lag, and aiokafka's admin ``list_consumer_group_offsets``
cannot decode Tansu's answer; a consumer created *in* the group (never subscribing,
so it never joins or rebalances anything) reads the group's committed offsets with
``committed()`` (the plain OffsetFetch every broker answers; verified on Tansu). The same functions
serve the services' gauges and ``tweetshop lag``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from tweetshop_contracts.topics import dlq_topic

from . import metrics

if TYPE_CHECKING:  # the `tweetshop` command imports this module: it needs no FastStream
    from .kafka import TopicNames

log = structlog.get_logger(__name__)

# The group whose committed offsets on ``<topic>.dlq`` mark what `tweetshop dlq replay|dismiss` has dealt with:
# a dead letter at or after that offset is pending. Prefixed with the topic namespace like every group.
DLQ_CURSOR_GROUP = "tweetshop.dlq-cursor"
# How often a service measures the lag of its own groups; a scrape every 15 s sees fresh values.
LAG_INTERVAL_S = 5.0
METADATA_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PartitionLag:
    """One partition as one consumer group sees it."""

    group: str
    topic: str  # physical name
    partition: int
    beginning: int
    end: int
    committed: int | None  # None: the group never committed here (it starts from the beginning)

    @property
    def position(self) -> int:
        """Where the group resumes reading."""
        return self.beginning if self.committed is None else max(self.committed, self.beginning)

    @property
    def lag(self) -> int:
        """Messages published that the group has not committed yet."""
        return max(0, self.end - self.position)


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout: float = METADATA_TIMEOUT_S) -> list[int]:
    """The partition numbers of ``topic`` (fresh metadata); empty when the topic does not exist."""
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:
        # Not known yet (created since the last metadata refresh, or never asked about): refresh now.
        await asyncio.wait_for(consumer._client.force_metadata_update(), timeout)
        partitions = consumer.partitions_for_topic(topic)
    return sorted(partitions or ())


async def measure(consumer: AIOKafkaConsumer, group: str, topics: Iterable[str]) -> list[PartitionLag]:
    """Lag of ``group`` on each partition of ``topics``; ``consumer`` must have been created with ``group_id=group``."""
    tps = [TopicPartition(topic, p) for topic in topics for p in await partitions_of(consumer, topic)]
    if not tps:
        return []
    ends, beginnings = await asyncio.gather(consumer.end_offsets(tps), consumer.beginning_offsets(tps))
    committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
    return [
        PartitionLag(group, tp.topic, tp.partition, beginnings[tp], ends[tp], offset)
        for tp, offset in zip(tps, committed, strict=True)
    ]


def group_consumer(
    bootstrap_servers: str,
    group: str,
    *,
    request_timeout_ms: int = 10_000,
    security: Mapping[str, Any] | None = None,
) -> AIOKafkaConsumer:
    """A consumer that only reads ``group``'s offsets: it never subscribes, so it never joins the group.

    ``security``: ``kafka_security.client_security(settings)``, the TLS and SASL arguments (none: PLAINTEXT).
    """
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        request_timeout_ms=request_timeout_ms,
        client_id=f"tweetshop-lag-{group}"[:200],
        **(security or {}),
    )


class ConsumerLagMonitor:
    """Measures the service's own consumer groups on a timer and publishes the lag and dead-letter gauges."""

    def __init__(
        self,
        bootstrap_servers: str,
        names: TopicNames,
        subscriptions: Sequence[tuple[str, str]],
        *,
        interval: float = LAG_INTERVAL_S,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        """``subscriptions``: (group id, contract topic) pairs; ``security``: TLS and SASL client arguments."""
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})
        self._names = names
        self._interval = interval
        self._topics_of: dict[str, list[str]] = {}
        for group, topic in subscriptions:
            self._topics_of.setdefault(group, []).append(topic)
        self._dlq_topics = sorted({dlq_topic(topic) for _, topic in subscriptions})
        self._cursor_group = names.namespace + DLQ_CURSOR_GROUP
        self._consumers: dict[str, AIOKafkaConsumer] = {}
        self._failing = False

    async def run(self) -> None:
        """Measure every ``interval`` seconds until cancelled (a broker outage only skips rounds)."""
        try:
            while True:
                try:
                    await self.collect()
                    if self._failing:
                        log.info("consumer lag measured again")
                    self._failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    metrics.CONSUMER_LAG_ERRORS.inc()
                    if not self._failing:  # once per outage, not every round
                        log.warning("cannot measure consumer lag", error=repr(exc))
                    self._failing = True
                    await self.close()
                await asyncio.sleep(self._interval)
        finally:
            await self.close()

    async def collect(self) -> None:
        """One round: every group's lag, then the dead-letter gauges."""
        for group, topics in self._topics_of.items():
            consumer = await self._consumer(group)
            for row in await measure(consumer, group, [self._names.physical(t) for t in topics]):
                metrics.CONSUMER_LAG.labels(group, self._names.logical(row.topic), str(row.partition)).set(row.lag)
        if not self._dlq_topics:
            return
        cursor = await self._consumer(self._cursor_group)
        rows = await measure(cursor, self._cursor_group, [self._names.physical(t) for t in self._dlq_topics])
        totals: dict[str, tuple[int, int]] = {self._names.physical(t): (0, 0) for t in self._dlq_topics}
        for row in rows:
            parked, pending = totals[row.topic]
            totals[row.topic] = (parked + row.end - row.beginning, pending + row.lag)
        for topic, (parked, pending) in totals.items():
            metrics.DLQ_MESSAGES.labels(self._names.logical(topic)).set(parked)
            metrics.DLQ_PENDING.labels(self._names.logical(topic)).set(pending)

    async def _consumer(self, group: str) -> AIOKafkaConsumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = group_consumer(self._bootstrap, group, security=self._security)
            try:
                await asyncio.wait_for(consumer.start(), METADATA_TIMEOUT_S * 2)
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self._consumers[group] = consumer
        return consumer

    async def close(self) -> None:
        """Close the offset readers (they are made again on the next round)."""
        consumers, self._consumers = list(self._consumers.values()), {}
        for consumer in consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
