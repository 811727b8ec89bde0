"""`tweetshop tail TOPIC`: decoded, validated events as they arrive (or from the beginning)."""

from __future__ import annotations

import json
import time
from typing import Any

from .connect import kafka_consumer
from .output import json_line, note, say
from .records import Message, first_line, to_message, topic_partitions
from .settings import CliSettings

ENVELOPE_FIELDS = ("event_id", "event_type", "schema_version", "occurred_at", "producer", "correlation_id")


def describe(message: Message) -> str:
    """One line: where, what, which order; the event's own fields as compact JSON (or why it is invalid)."""
    try:
        event = message.decode()
    except ValueError as exc:
        return f"INVALID {message.where} key={_key(message)}: {first_line(str(exc))} value={message.value_text(200)}"
    fields: dict[str, Any] = json.loads(event.model_dump_json(exclude=set(ENVELOPE_FIELDS)))
    parked = ""
    if "dlq_error" in message.headers:
        parked = f" PARKED by {message.headers.get('dlq_consumer_group', '?')}: {message.headers['dlq_error'][:200]}"
    return (
        f"{event.occurred_at.isoformat(timespec='milliseconds')} {message.where} {event.event_type} "
        f"key={_key(message)} correlation_id={event.correlation_id} event_id={event.event_id}{parked} "
        + json.dumps(fields, separators=(",", ":"), sort_keys=True)
    )


def _key(message: Message) -> str:
    return message.key.decode("utf-8", errors="backslashreplace") if message.key is not None else "-"


async def run(
    settings: CliSettings,
    topic: str,
    *,
    from_beginning: bool,
    limit: int | None,
    idle_timeout: float | None,
    as_json: bool,
) -> int:
    """Print events until interrupted, ``limit`` messages, or ``idle_timeout`` seconds without one."""
    physical = settings.topic_namespace + topic
    async with kafka_consumer(settings) as consumer:
        tps = await topic_partitions(consumer, physical)
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the position now, so what arrives from here on is shown
                await consumer.position(tp)
        start = "from the beginning" if from_beginning else "from now on"
        note(f"tailing {physical} ({len(tps)} partitions) {start}; Ctrl-C stops")
        shown = 0
        last = time.monotonic()
        while limit is None or shown < limit:
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            records = sorted((r for rs in batch.values() for r in rs), key=lambda r: (r.timestamp, r.partition))
            for record in records:
                message = to_message(record, settings.topic_namespace)
                if as_json:
                    json_line(message.as_json())
                else:
                    say(describe(message))
                shown += 1
                if limit is not None and shown >= limit:
                    break
            if records:
                last = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                break
    return 0
