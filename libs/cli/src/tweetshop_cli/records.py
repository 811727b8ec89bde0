"""Reading topics: partitions, bounded reads up to a snapshot of the end offsets, decoding with the contract."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from tweetshop_contracts import Envelope, decode_event
from tweetshop_contracts.topics import DLQ_SUFFIX
from tweetshop_platform.lag import partitions_of

from .connect import CommandError
from .progress import Progress

# A bounded read that gets nothing for this long while the broker says more is there has stalled.
STALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Message:
    """One message as read from the broker."""

    topic: str  # contract name (namespace removed)
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0

    @property
    def where(self) -> str:
        """``topic p<partition>@<offset>``."""
        return f"{self.topic} p{self.partition}@{self.offset}"

    @property
    def contract_topic(self) -> str:
        """The topic whose contract the value follows (a dead letter follows its original topic's)."""
        # From the DLQ's own name, not its headers: a replay can only ever go back where the DLQ belongs.
        return self.topic.removesuffix(DLQ_SUFFIX)

    def decode(self) -> Envelope:
        """The value as a v1 event of its topic; ValueError when it is not one."""
        return decode_event(self.contract_topic, self.value)

    def sent_at(self) -> str:
        """The broker timestamp, ISO-8601 UTC."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")

    def value_text(self, limit: int = 300) -> str:
        """The value for a human: JSON as is, anything else escaped; cut at ``limit`` characters."""
        text = self.value.decode("utf-8", errors="backslashreplace")
        return text if len(text) <= limit else text[:limit] + "…"

    def as_json(self) -> dict[str, Any]:
        """A JSON-friendly description, with the decoded event or the reason it does not decode."""
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.sent_at(),
            "key": self.key.decode("utf-8", errors="backslashreplace") if self.key is not None else None,
            "headers": self.headers,
        }
        try:
            out["event"] = json.loads(self.decode().model_dump_json())
            out["valid"] = True
        except ValueError as exc:
            out["valid"] = False
            out["error"] = first_line(str(exc))
            out["value"] = self.value_text(10_000)
        return out


def first_line(text: str, limit: int = 300) -> str:
    """The first line of an error, cut short."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "…"


def _headers(raw: Any) -> dict[str, str]:
    return {k: (v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)) for k, v in raw or ()}


def to_message(record: Any, namespace: str) -> Message:
    """An aiokafka ConsumerRecord as a Message (topic name without the namespace)."""
    topic: str = record.topic
    if namespace and topic.startswith(namespace):
        topic = topic[len(namespace) :]
    value: bytes = record.value or b""
    headers = _headers(record.headers)
    return Message(topic, record.partition, record.offset, record.key, value, headers, record.timestamp)


async def topic_partitions(consumer: AIOKafkaConsumer, physical_topic: str) -> list[TopicPartition]:
    """Every partition of a topic; a CommandError naming the topic when the broker has no such topic."""
    partitions = await partitions_of(consumer, physical_topic)
    if not partitions:
        raise CommandError(f"the broker has no topic {physical_topic!r} (see `tweetshop lag` or docs/topics.md)")
    return [TopicPartition(physical_topic, p) for p in partitions]


async def existing_topics(consumer: AIOKafkaConsumer) -> set[str]:
    """Every topic the broker has (physical names)."""
    return set(await consumer.topics())


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    namespace: str,
    progress: Progress | None = None,
) -> AsyncIterator[Message]:
    """Every message from ``starts`` up to (not including) ``ends``, partition by partition in offset order."""
    active = {tp for tp in starts if starts[tp] < ends[tp]}
    if not active:
        return
    consumer.assign(sorted(active))
    for tp in active:
        consumer.seek(tp, starts[tp])
    last_progress = time.monotonic()
    while active:
        batch = await consumer.getmany(*active, timeout_ms=500, max_records=1000)
        for tp, records in batch.items():
            inside = [r for r in records if r.offset < ends[tp]]
            for record in inside:
                yield to_message(record, namespace)
            if progress is not None:
                progress.advance(len(inside))
        if batch:
            last_progress = time.monotonic()
        for tp in list(active):
            if await consumer.position(tp) >= ends[tp]:
                active.discard(tp)
                consumer.pause(tp)
        if active and time.monotonic() - last_progress > STALL_TIMEOUT_S:
            stuck = ", ".join(f"{tp.topic} p{tp.partition}" for tp in sorted(active))
            raise CommandError(f"reading stalled: no message for {STALL_TIMEOUT_S:.0f} s from {stuck}")


async def read_topics(
    consumer: AIOKafkaConsumer,
    physical_topics: list[str],
    namespace: str,
    progress_label: str | None = None,
    *,
    show_progress: bool = True,
) -> AsyncIterator[Message]:
    """Every message of existing ``physical_topics`` from the beginning up to their end offsets right now."""
    known = await existing_topics(consumer)
    tps = [tp for topic in physical_topics if topic in known for tp in await topic_partitions(consumer, topic)]
    if not tps:
        return
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    total = sum(ends[tp] - starts[tp] for tp in tps)
    progress = Progress(progress_label or "reading", total, enabled=show_progress) if total else None
    async for message in read_range(consumer, starts, ends, namespace, progress):
        yield message
    if progress is not None:
        progress.finish()
