"""Migrations and per-service isolation against a real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from tweetshop_platform import db


def migrations(sql: str) -> list[db.Migration]:
    return [*db.platform_migrations(), db.Migration("svc", 1, "0001_init.sql", sql)]


async def test_migrations_apply_once_even_when_replicas_start_together(database: Any) -> None:
    dsn = await database.provision("catalog")
    pools = [await db.create_pool(dsn, "catalog", min_size=1, max_size=2) for _ in range(3)]
    try:
        wanted = migrations("CREATE TABLE widgets (id INT PRIMARY KEY);")
        applied = await asyncio.gather(*(db.apply_migrations(p, "catalog", wanted) for p in pools))
        assert sorted(len(a) for a in applied) == [0, 0, 2], "exactly one replica applies them"
        assert await db.apply_migrations(pools[0], "catalog", wanted) == []
        tables = {
            r["tablename"] for r in await pools[0].fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'catalog'")
        }
        assert {"widgets", "outbox", "inbox", "schema_migrations"} <= tables
    finally:
        for p in pools:
            await p.close()


async def test_an_edited_applied_migration_stops_start_up(database: Any) -> None:
    dsn = await database.provision("catalog")
    pool = await db.create_pool(dsn, "catalog", min_size=1, max_size=1)
    try:
        await db.apply_migrations(pool, "catalog", migrations("CREATE TABLE widgets (id INT);"))
        with pytest.raises(RuntimeError, match="append-only"):
            await db.apply_migrations(pool, "catalog", migrations("CREATE TABLE widgets (id BIGINT);"))
    finally:
        await pool.close()


async def test_a_service_role_cannot_read_another_services_schema(database: Any) -> None:
    catalog_dsn = await database.provision("catalog")
    checkout_dsn = await database.provision("checkout")
    catalog = await asyncpg.connect(catalog_dsn)
    checkout = await asyncpg.connect(checkout_dsn)
    try:
        await catalog.execute("CREATE TABLE catalog.secrets (v TEXT); INSERT INTO catalog.secrets VALUES ('x')")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await checkout.fetch("SELECT * FROM catalog.secrets")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await checkout.execute("CREATE TABLE public.sneaky (v TEXT)")
        assert await checkout.fetchval("SELECT current_schema()") == "checkout"
    finally:
        await catalog.close()
        await checkout.close()
