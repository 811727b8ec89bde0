"""Fixtures of tracking's database tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources

import asyncpg
import pytest_asyncio
from tweetshop_devstack.pytest_plugin import ScratchDatabase
from tweetshop_platform import db


@pytest_asyncio.fixture(loop_scope="session")
async def tracking_pool(database: ScratchDatabase) -> AsyncIterator[asyncpg.Pool]:
    """tracking's schema, migrated, in a fresh database."""
    dsn = await database.provision("tracking")
    pool = await db.create_pool(dsn, "tracking", min_size=1, max_size=2)
    try:
        own = db.load_migrations("tracking", resources.files("tracking") / "migrations")
        migrations = db.platform_migrations() + own
        await db.apply_migrations(pool, "tracking", migrations)
        yield pool
    finally:
        await pool.close()
