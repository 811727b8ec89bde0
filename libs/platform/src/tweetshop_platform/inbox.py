"""Inbox: a consumer records each event_id in the same transaction as its effects; a duplicate is a no-op."""

from __future__ import annotations

import asyncpg
from tweetshop_contracts import Envelope


async def claim(conn: asyncpg.Connection, consumer: str, event: Envelope) -> bool:
    """Record that ``consumer`` handles ``event``; False when it already did (the caller skips it)."""
    inserted = await conn.fetchval(
        """INSERT INTO inbox (consumer, event_id, topic, event_type) VALUES ($1, $2, $3, $4)
           ON CONFLICT (consumer, event_id) DO NOTHING RETURNING true""",
        consumer,
        event.event_id,
        event.topic(),
        event.event_type,
    )
    return bool(inserted)
