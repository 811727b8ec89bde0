"""Inbox: a consumer records each event_id in the same transaction as its effects; a duplicate is a no-op."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from tweetshop_contracts import Envelope


async def claim(conn: asyncpg.Connection, consumer: str, event: Envelope) -> bool:
    """Record that ``consumer`` handles ``event``; False when it already did (the caller skips it)."""
    return (await claim_many(conn, consumer, [event]))[0]


async def claim_many(conn: asyncpg.Connection, consumer: str, events: Sequence[Envelope]) -> list[bool]:
    """``claim`` for several events in one statement; per event, False when already handled (also when an
    earlier event of ``events`` has the same event_id)."""
    inserted = {
        row["event_id"]
        for row in await conn.fetch(
            """INSERT INTO inbox (consumer, event_id, topic, event_type)
               SELECT $1, event_id, topic, event_type FROM unnest($2::uuid[], $3::text[], $4::text[])
                    AS e(event_id, topic, event_type)
               ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id""",
            consumer,
            [e.event_id for e in events],
            [e.topic() for e in events],
            [e.event_type for e in events],
        )
    }
    claimed = []
    for event in events:
        claimed.append(event.event_id in inserted)
        inserted.discard(event.event_id)  # a second copy in the same batch is a duplicate
    return claimed
