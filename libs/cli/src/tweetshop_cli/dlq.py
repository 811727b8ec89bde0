"""`tweetshop dlq list|show|replay|dismiss`: inspect parked messages and send them back after a fix.

Kafka cannot delete one message, so what has been dealt with is marked by a cursor: the
offsets committed by the consumer group ``<namespace>tweetshop.dlq-cursor`` on each
``<topic>.dlq`` partition. Messages at or after the cursor are *pending*; ``replay`` and
``dismiss`` move it to the end. The services export the pending count as
``tweetshop_dlq_pending_messages`` (the DLQ alert).

``replay`` publishes each pending message again, key, value and original headers, to the
topic it came from. Every consumer group of that topic sees it again: the ones that had
handled it skip it by its ``event_id`` (their inbox), the one that parked it handles it now.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from tweetshop_contracts.topics import DLQ_SUFFIX, dlq_topic
from tweetshop_platform.lag import DLQ_CURSOR_GROUP

from .connect import CommandError, kafka_consumer, kafka_producer
from .output import confirm, json_line, note, say, table
from .progress import Progress
from .records import Message, existing_topics, first_line, read_range, topic_partitions
from .settings import CliSettings


def dlq_of(topic: str) -> str:
    """The dead-letter topic named by ``topic`` (the original topic or the DLQ itself)."""
    return topic if topic.endswith(DLQ_SUFFIX) else dlq_topic(topic)


def cursor_group(settings: CliSettings) -> str:
    """The group whose committed offsets mark what has been replayed or dismissed."""
    return settings.topic_namespace + DLQ_CURSOR_GROUP


async def _cursors(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    beginnings = await consumer.beginning_offsets(list(tps))
    committed = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
    return {tp: beginnings[tp] if c is None else max(c, beginnings[tp]) for tp, c in zip(tps, committed, strict=True)}


async def _read(
    settings: CliSettings, consumer: AIOKafkaConsumer, dlq: str, *, everything: bool
) -> tuple[list[TopicPartition], dict[TopicPartition, int], dict[TopicPartition, int], list[Message]]:
    tps = await topic_partitions(consumer, settings.topic_namespace + dlq)
    ends = await consumer.end_offsets(tps)
    starts = await consumer.beginning_offsets(tps) if everything else await _cursors(consumer, tps)
    messages = [m async for m in read_range(consumer, starts, ends, settings.topic_namespace)]
    messages.sort(key=lambda m: (m.headers.get("dlq_failed_at", ""), m.partition, m.offset))
    return tps, starts, ends, messages


async def summary(settings: CliSettings, *, as_json: bool) -> int:
    """Every dead-letter topic: how many messages it holds and how many are pending."""
    ns = settings.topic_namespace
    async with kafka_consumer(settings, group_id=cursor_group(settings)) as consumer:
        dlqs = sorted(t for t in await existing_topics(consumer) if t.startswith(ns) and t.endswith(DLQ_SUFFIX))
        rows = []
        for physical in dlqs:
            tps = await topic_partitions(consumer, physical)
            ends = await consumer.end_offsets(tps)
            beginnings = await consumer.beginning_offsets(tps)
            cursors = await _cursors(consumer, tps)
            parked = sum(ends[tp] - beginnings[tp] for tp in tps)
            pending = sum(max(0, ends[tp] - cursors[tp]) for tp in tps)
            rows.append((physical[len(ns) :], parked, pending))
    if as_json:
        for topic, parked, pending in rows:
            json_line({"topic": topic, "messages": parked, "pending": pending})
        return 0
    if not rows:
        note("no dead-letter topics on the broker")
        return 0
    say(table(("DLQ TOPIC", "MESSAGES", "PENDING"), rows, right=(1, 2)))
    return 0


async def list_messages(settings: CliSettings, topic: str, *, everything: bool, as_json: bool) -> int:
    """One line per pending (or, with ``everything``, every) message of one dead-letter topic."""
    dlq = dlq_of(topic)
    async with kafka_consumer(settings, group_id=cursor_group(settings)) as consumer:
        _, _, _, messages = await _read(settings, consumer, dlq, everything=everything)
    if as_json:
        for m in messages:
            json_line(m.as_json())
        return 0
    if not messages:
        note(f"no {'' if everything else 'pending '}messages on {dlq}")
        return 0
    rows = []
    for m in messages:
        h = m.headers
        rows.append(
            (
                f"p{m.partition}@{m.offset}",
                h.get("dlq_failed_at", m.sent_at())[:23],
                h.get("dlq_consumer_group", "?"),
                h.get("dlq_attempts", "?"),
                h.get("event_type", "?"),
                h.get("correlation_id", "-"),
                f"{h.get('dlq_error_type', '?')}: {first_line(h.get('dlq_error', ''), 120)}",
            )
        )
    say(table(("AT", "FAILED AT", "GROUP", "TRIES", "EVENT TYPE", "CORRELATION ID", "ERROR"), rows))
    note(f"{len(messages)} {'' if everything else 'pending '}message(s) on {dlq}; details: tweetshop dlq show {topic}")
    return 0


def _parse_at(at: str) -> tuple[int, int]:
    try:
        partition, offset = at.lstrip("p").split("@")
        return int(partition), int(offset)
    except ValueError:
        raise CommandError(f"--at takes PARTITION@OFFSET as `dlq list` shows it (p3@12 or 3@12), not {at!r}") from None


def _details(m: Message, pending: bool) -> str:
    h = m.headers
    lines = [
        f"{m.where}{'  (pending)' if pending else ''}",
        f"  parked:    {h.get('dlq_failed_at', m.sent_at())} by {h.get('dlq_consumer_group', '?')} "
        f"after {h.get('dlq_attempts', '?')} attempt(s)",
        f"  error:     {h.get('dlq_error_type', '?')}: {h.get('dlq_error', '')}",
        f"  from:      {h.get('dlq_original_topic', m.contract_topic)} "
        f"p{h.get('dlq_original_partition', '?')}@{h.get('dlq_original_offset', '?')}",
        f"  key:       {m.key.decode('utf-8', errors='backslashreplace') if m.key is not None else '-'}",
        "  headers:   " + ", ".join(f"{k}={v}" for k, v in sorted(h.items()) if not k.startswith("dlq_")),
    ]
    try:
        event = m.decode()
        lines.append(f"  event:     {event.event_type} {event.event_id} (a valid v1 event: it can be replayed)")
        body = json.dumps(json.loads(event.model_dump_json()), indent=2, sort_keys=True)
    except ValueError as exc:
        lines.append(f"  event:     NOT a valid v1 event, replay skips it: {first_line(str(exc))}")
        body = m.value_text(5000)
    lines += ["    " + line for line in body.splitlines()]
    return "\n".join(lines)


async def show(settings: CliSettings, topic: str, *, at: str | None, everything: bool, as_json: bool) -> int:
    """Everything about the pending messages (or the one at PARTITION@OFFSET): error, headers, the event."""
    dlq = dlq_of(topic)
    async with kafka_consumer(settings, group_id=cursor_group(settings)) as consumer:
        tps, _, _, messages = await _read(settings, consumer, dlq, everything=everything or at is not None)
        cursors = await _cursors(consumer, tps)
    if at is not None:
        partition, offset = _parse_at(at)
        messages = [m for m in messages if (m.partition, m.offset) == (partition, offset)]
        if not messages:
            raise CommandError(f"no message at p{partition}@{offset} on {dlq}")
    if not messages:
        note(f"no {'' if everything else 'pending '}messages on {dlq}")
        return 0
    by_partition = {tp.partition: cursors[tp] for tp in tps}
    for m in messages:
        if as_json:
            json_line(m.as_json() | {"pending": m.offset >= by_partition[m.partition]})
        else:
            say(_details(m, m.offset >= by_partition[m.partition]))
            say()
    return 0


async def replay(
    settings: CliSettings, topic: str, *, event_id: str | None, dry_run: bool, yes: bool, quiet: bool
) -> int:
    """Publish pending dead letters (or the one with ``event_id``) to their original topic; move the cursor."""
    dlq = dlq_of(topic)
    wanted: uuid.UUID | None = None
    if event_id is not None:
        try:
            wanted = uuid.UUID(event_id)
        except ValueError:
            raise CommandError(f"--event-id must be a UUID, not {event_id!r}") from None
    async with kafka_consumer(settings, group_id=cursor_group(settings)) as consumer:
        # One event is looked for among every message; otherwise only the pending ones are replayed.
        tps, starts, ends, messages = await _read(settings, consumer, dlq, everything=wanted is not None)
        valid: list[Message] = []
        invalid: list[tuple[Message, str]] = []
        for m in messages:
            try:
                event = m.decode()
            except ValueError as exc:
                invalid.append((m, first_line(str(exc), 200)))
                continue
            if wanted is None or event.event_id == wanted:
                valid.append(m)
        if wanted is not None:
            invalid = []
            if not valid:
                raise CommandError(f"no message with event_id {wanted} on {dlq}")
            valid = valid[-1:]  # parked more than once: replaying one copy is enough
        for m, reason in invalid:
            note(
                f"skipping {m.where}: not a valid v1 event ({reason}); `tweetshop dlq show {topic} --at "
                f"p{m.partition}@{m.offset}`"
            )
        moves_cursor = wanted is None and bool(messages)
        if not valid and not moves_cursor:
            note(f"nothing to replay on {dlq}")
            return 0
        targets = sorted({m.contract_topic for m in valid})
        plan = f"replay {len(valid)} message(s) from {dlq} to {', '.join(targets) or '-'}"
        if dry_run:
            say(f"dry run: would {plan}" + (f" and pass over {len(invalid)} invalid one(s)" if invalid else ""))
            return 0
        confirm(f"{plan[:1].upper()}{plan[1:]}?", yes)
        progress = Progress(f"replaying {dlq}", len(valid), enabled=not quiet)
        async with kafka_producer(settings) as producer:
            pending_acks = []
            for m in valid:
                headers = [(k, v.encode()) for k, v in m.headers.items() if not k.startswith("dlq_")]
                headers.append(("dlq_replayed_from", f"{m.topic}/{m.partition}@{m.offset}".encode()))
                target = settings.topic_namespace + m.contract_topic
                pending_acks.append(await producer.send(target, m.value, key=m.key, headers=headers))
                progress.advance()
            # Every copy must be on the broker before the cursor passes its original.
            await asyncio.gather(*pending_acks)
        progress.finish()
        if moves_cursor:
            await consumer.commit({tp: ends[tp] for tp in tps if starts[tp] < ends[tp]})
    say(f"replayed {len(valid)} message(s) from {dlq} to {', '.join(targets) or '-'}")
    if invalid:
        say(f"passed over {len(invalid)} invalid message(s) (see `tweetshop dlq list {topic} --all`)")
    if wanted is not None:
        note("the cursor did not move (one event was chosen); `tweetshop dlq dismiss` when the rest is dealt with")
    return 0


async def dismiss(settings: CliSettings, topic: str, *, yes: bool) -> int:
    """Mark every pending message as dealt with, without replaying it."""
    dlq = dlq_of(topic)
    async with kafka_consumer(settings, group_id=cursor_group(settings)) as consumer:
        tps = await topic_partitions(consumer, settings.topic_namespace + dlq)
        ends = await consumer.end_offsets(tps)
        cursors = await _cursors(consumer, tps)
        moving = {tp: ends[tp] for tp in tps if cursors[tp] < ends[tp]}
        count = sum(ends[tp] - cursors[tp] for tp in moving)
        if not moving:
            note(f"nothing pending on {dlq}")
            return 0
        confirm(f"Dismiss {count} pending message(s) on {dlq} without replaying them?", yes)
        consumer.assign(sorted(moving))
        await consumer.commit(moving)
    say(f"dismissed {count} message(s) on {dlq}; they stay readable with `tweetshop dlq list {topic} --all`")
    return 0
