"""`tweetshop lag`: per-partition lag of our consumer groups, like kafka-consumer-groups --describe."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tweetshop_contracts.topics import ALL_TOPICS
from tweetshop_platform.lag import PartitionLag, group_consumer, measure

from .connect import broker_unreachable, kafka_admin, kafka_consumer, kafka_security
from .groups import SUBSCRIPTIONS
from .output import json_line, note, say, table
from .progress import Progress
from .settings import CliSettings


@dataclass(frozen=True)
class GroupTarget:
    """A group and the topics to measure it on (physical names)."""

    group: str
    topics: tuple[str, ...]
    known: bool  # one of our services' subscriptions (else found on the broker with --all)


async def targets(settings: CliSettings, *, include_others: bool, only: str | None) -> list[GroupTarget]:
    """Our groups (and with ``include_others`` every group the broker lists in the namespace)."""
    ns = settings.topic_namespace
    by_group: dict[str, list[str]] = {}
    for sub in SUBSCRIPTIONS:
        by_group.setdefault(ns + sub.group, []).append(ns + sub.topic)
    found = [GroupTarget(group, tuple(topics), True) for group, topics in by_group.items()]
    if include_others:
        async with kafka_admin(settings) as admin:
            listed = await admin.list_consumer_groups()
        # Any other group may read any of our topics: measure it on all of them and keep what it committed.
        every_topic = tuple(ns + t for t in ALL_TOPICS)
        for group, _protocol in sorted(listed):
            if group.startswith(ns) and group not in by_group:
                found.append(GroupTarget(group, every_topic, False))
    if only:
        found = [t for t in found if only in t.group]
    return found


async def _measure(settings: CliSettings, target: GroupTarget) -> list[PartitionLag]:
    consumer = group_consumer(settings.kafka_bootstrap_servers, target.group, security=kafka_security(settings))
    try:
        await asyncio.wait_for(consumer.start(), settings.connect_timeout_s)
    except Exception as exc:
        raise broker_unreachable(settings, exc) from exc
    try:
        rows = await measure(consumer, target.group, target.topics)
    finally:
        await consumer.stop()
    # A group found on the broker is shown only where it has committed (it reads those topics).
    return rows if target.known else [r for r in rows if r.committed is not None]


def _logical(topic: str, namespace: str) -> str:
    return topic[len(namespace) :] if namespace and topic.startswith(namespace) else topic


async def run(settings: CliSettings, *, include_others: bool, only: str | None, as_json: bool, quiet: bool) -> int:
    """Print the lag table; 0 even when there is lag (it is information, not a failure)."""
    async with kafka_consumer(settings):  # fail fast, naming the broker, before anything else
        pass
    chosen = await targets(settings, include_others=include_others, only=only)
    progress = Progress("reading committed offsets", len(chosen), enabled=not quiet and len(chosen) > 3)
    rows: list[PartitionLag] = []
    for target in chosen:
        rows.extend(await _measure(settings, target))
        progress.advance()
    progress.finish()
    ns = settings.topic_namespace
    if as_json:
        for r in rows:
            json_line(
                {
                    "group": r.group,
                    "topic": _logical(r.topic, ns),
                    "partition": r.partition,
                    "committed": r.committed,
                    "end": r.end,
                    "lag": r.lag,
                }
            )
        return 0
    if not rows:
        note("no consumer groups with partitions to show (have the services created their topics?)")
        return 0
    display = [
        (r.group, _logical(r.topic, ns), r.partition, r.committed, r.end, r.lag)
        for r in sorted(rows, key=lambda r: (r.group, r.topic, r.partition))
    ]
    say(table(("GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"), display, right=(2, 3, 4, 5)))
    totals: dict[str, int] = {}
    for r in rows:
        totals[r.group] = totals.get(r.group, 0) + r.lag
    say()
    say(table(("GROUP", "TOTAL LAG"), sorted(totals.items()), right=(1,)))
    if ns:
        note(f"topic namespace: {ns!r}")
    return 0
