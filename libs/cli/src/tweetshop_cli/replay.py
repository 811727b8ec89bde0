"""`tweetshop replay READ_MODEL`: rebuild a read model (e.g. feed's product cards) from its topic.

In ONE transaction, in the service's schema:

1. ``LOCK TABLE inbox`` against inserts: the service's consumers wait (their lag rises for
   the duration) instead of racing the rebuild; in-flight transactions finish first;
2. empty the read model's tables and the inbox rows of the subscription that keeps them;
3. snapshot the topic's end offsets and apply every event up to them with the service's
   own handler, claiming each ``event_id`` in the inbox as the live consumer would.

Readers see the old rows until the commit, then the rebuilt ones. Events published
after the snapshot are applied by the live consumer once the lock is released; events
before it that the live consumer had not reached yet are duplicates to it (the inbox).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
from tweetshop_platform import inbox

from .connect import CommandError, database, kafka_consumer
from .groups import READ_MODELS, ReadModel
from .output import confirm, say
from .progress import Progress
from .records import read_range, topic_partitions
from .settings import CliSettings

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def read_model(name: str) -> ReadModel:
    """The read model called ``name``; a CommandError listing the known ones otherwise."""
    model = READ_MODELS.get(name)
    if model is None:
        known = ", ".join(sorted(READ_MODELS))
        raise CommandError(f"no read model {name!r}; known: {known}")
    return model


def load_handler(model: ReadModel) -> Handler:
    """The service's own handler (its package must be installed next to this command)."""
    module_name, _, function = model.handler.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(
            f"{model.name} is rebuilt by {model.handler}, but the {model.service} package is not installed here "
            f"({exc}); run this where the services are installed (`make install`)"
        ) from exc
    return cast(Handler, getattr(module, function))


def describe_models() -> str:
    """The read models, one per line (for --help)."""
    return "\n".join(
        f"  {m.name:<18} {m.service}.{', '.join(m.tables)} from {m.topic}: {m.description}"
        for m in READ_MODELS.values()
    )


async def _check_tables(conn: asyncpg.Connection, model: ReadModel) -> dict[str, int]:
    counts = {}
    for table in (*model.tables, "inbox"):
        if not _IDENTIFIER.match(table):
            raise CommandError(f"not a safe table name: {table!r}")
        if await conn.fetchval("SELECT to_regclass($1)", f"{model.service}.{table}") is None:
            raise CommandError(
                f"no table {model.service}.{table} in this database: is TWEETSHOP_DATABASE_URL (or --database-url) "
                f"the database {model.service} uses, with a role that may use its schema?"
            )
        counts[table] = await conn.fetchval(f"SELECT count(*) FROM {model.service}.{table}")
    return counts


async def run(settings: CliSettings, name: str, *, dry_run: bool, yes: bool, quiet: bool) -> int:
    """Rebuild the read model ``name``; prints what it applied."""
    model = read_model(name)
    handler = load_handler(model)
    group = settings.topic_namespace + model.group
    physical = settings.topic_namespace + model.topic
    async with kafka_consumer(settings) as consumer, database(settings, model.service) as conn:
        tps = await topic_partitions(consumer, physical)
        counts = await _check_tables(conn, model)
        rows_before = sum(counts[t] for t in model.tables)
        ends = await consumer.end_offsets(tps)
        beginnings = await consumer.beginning_offsets(tps)
        total = sum(ends[tp] - beginnings[tp] for tp in tps)
        plan = (
            f"rebuild {model.name} ({model.service}.{', '.join(model.tables)}: {rows_before} rows) "
            f"from {total} messages of {physical}"
        )
        if dry_run:
            say(f"dry run: would {plan}")
            return 0
        confirm(f"{plan[:1].upper()}{plan[1:]}? The service's consumers wait until it commits.", yes)
        applied = duplicates = skipped = 0
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {model.service}.inbox IN SHARE ROW EXCLUSIVE MODE")
            for table in model.tables:
                await conn.execute(f"DELETE FROM {model.service}.{table}")
            await conn.execute(f"DELETE FROM {model.service}.inbox WHERE consumer = $1", group)
            # The snapshot is taken under the lock: nothing before it can be applied by anyone but us now.
            ends = await consumer.end_offsets(tps)
            total = sum(ends[tp] - beginnings[tp] for tp in tps)
            progress = Progress(f"replaying {physical}", total, enabled=not quiet)
            async for message in read_range(consumer, beginnings, ends, settings.topic_namespace, progress):
                try:
                    event = message.decode()
                except ValueError:
                    skipped += 1  # not a v1 event of this topic: the live consumer parks or skips it too
                    continue
                if await inbox.claim(conn, group, event):
                    await handler(conn, event)
                    applied += 1
                else:
                    duplicates += 1
            progress.finish()
            rows_after = sum([await conn.fetchval(f"SELECT count(*) FROM {model.service}.{t}") for t in model.tables])
    say(
        f"rebuilt {model.name}: {applied} events applied, {duplicates} duplicates skipped, "
        f"{skipped} not valid v1 events skipped; {rows_before} rows before, {rows_after} now"
    )
    return 0
