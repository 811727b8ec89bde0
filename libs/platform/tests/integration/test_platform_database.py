"""Migrations and per-service isolation against a real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from tweetshop_platform import consumer, db


def migrations(sql: str) -> list[db.Migration]:
    return [*db.platform_migrations(), db.Migration("svc", 1, "0001_init.sql", sql)]


async def _listening(conn: asyncpg.Connection, channel: str) -> tuple[list[str], Callable[[], Awaitable[None]]]:
    """The channel names of the NOTIFYs ``conn`` hears on ``channel`` from now on, and how to stop listening."""
    notified: list[str] = []

    def on_notify(*args: Any) -> None:
        notified.append(args[2])

    await conn.add_listener(channel, on_notify)
    return notified, lambda: conn.remove_listener(channel, on_notify)


async def _until_any(notified: list[str], timeout: float = 2.5) -> None:
    for _ in range(int(timeout / 0.05)):
        if notified:
            return
        await asyncio.sleep(0.05)


async def test_migrations_apply_once_even_when_replicas_start_together(database: Any) -> None:
    dsn = await database.provision("catalog")
    pools = [await db.create_pool(dsn, "catalog", min_size=1, max_size=2) for _ in range(3)]
    try:
        wanted = migrations("CREATE TABLE widgets (id INT PRIMARY KEY);")
        applied = await asyncio.gather(*(db.apply_migrations(p, "catalog", wanted) for p in pools))
        assert sorted(len(a) for a in applied) == [0, 0, len(wanted)], "exactly one replica applies them"
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


async def test_a_batch_claims_each_event_once_and_its_outbox_rows_keep_their_order(database: Any) -> None:
    from tweetshop_contracts import OrderPlaced
    from tweetshop_devstack.testing import order_placed
    from tweetshop_platform import inbox, outbox

    def event() -> OrderPlaced:
        return order_placed()

    dsn = await database.provision("batchsvc")
    pool = await db.create_pool(dsn, "batchsvc", min_size=1, max_size=2)
    try:
        await db.apply_migrations(pool, "batchsvc", db.platform_migrations())
        seen, first, second = event(), event(), event()
        async with pool.acquire() as conn:
            assert await inbox.claim(conn, "g", seen)
            notified, stop_listening = await _listening(conn, "outbox_batchsvc")
            async with pool.acquire() as writer, writer.transaction():
                claimed = await inbox.claim_many(writer, "g", [first, seen, second, first])
                await outbox.enqueue(writer, first, second, seen)
            assert claimed == [True, False, True, False], "seen before, and the second copy in the batch"
            assert await inbox.claim_many(conn, "other", [seen]) == [True], "the inbox is per consumer"
            rows = await conn.fetch("SELECT event_id FROM outbox ORDER BY id")
            assert [r["event_id"] for r in rows] == [first.event_id, second.event_id, seen.event_id]
            await _until_any(notified)
            assert notified == ["outbox_batchsvc"], "one wake-up of the relay per transaction"
            await stop_listening()
    finally:
        await pool.close()


async def test_a_write_and_its_events_are_one_statement_both_or_neither(database: Any) -> None:
    from tweetshop_devstack.testing import order_placed
    from tweetshop_platform import outbox

    dsn = await database.provision("casvc")
    pool = await db.create_pool(dsn, "casvc", min_size=1, max_size=2)
    try:
        await db.apply_migrations(
            pool, "casvc", migrations("CREATE TABLE widgets (id INT PRIMARY KEY, colour TEXT NOT NULL);")
        )
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO widgets VALUES (1, 'red')")
            version = await conn.fetchval("SELECT xmin FROM widgets WHERE id = 1")
            notified, stop_listening = await _listening(conn, "outbox_casvc")
            cas = "UPDATE widgets SET colour = $2 WHERE id = $1 AND xmin = $3::xid RETURNING id"
            first, second = order_placed(), order_placed()
            async with pool.acquire() as writer:
                written = await outbox.write_then_enqueue(writer, cas, [1, "blue", version], [first, second])
                assert written is not None and written["id"] == 1
                assert not writer.is_in_transaction()
                # The row is no longer that version: nothing is written, no event, no wake-up.
                assert await outbox.write_then_enqueue(writer, cas, [1, "green", version], [order_placed()]) is None
                assert await outbox.write_then_enqueue(writer, cas, [2, "green", version], [order_placed()]) is None
                # A write that fails writes no event either.
                with pytest.raises(asyncpg.NotNullViolationError):
                    await outbox.write_then_enqueue(
                        writer, "UPDATE widgets SET colour = NULL WHERE id = $1 RETURNING id", [1], [order_placed()]
                    )
            assert await conn.fetchval("SELECT colour FROM widgets WHERE id = 1") == "blue"
            rows = await conn.fetch("SELECT event_id, event_type, message_key FROM outbox ORDER BY id")
            assert [r["event_id"] for r in rows] == [first.event_id, second.event_id]
            assert rows[0]["message_key"] == first.key() and rows[0]["event_type"] == "OrderPlaced"
            await _until_any(notified)
            await asyncio.sleep(0.2)
            assert notified == ["outbox_casvc"], "one wake-up, for the write that happened"
            await stop_listening()
            async with conn.transaction(), outbox.batched(conn):
                with pytest.raises(RuntimeError, match="batched"):
                    await outbox.write_then_enqueue(conn, cas, [1, "grey", version], [order_placed()])
    finally:
        await pool.close()


async def test_the_row_a_write_returns_picks_which_of_its_alternative_events_go_in(database: Any) -> None:
    from tweetshop_devstack.testing import order_placed
    from tweetshop_platform import outbox

    dsn = await database.provision("variantsvc")
    pool = await db.create_pool(dsn, "variantsvc", min_size=1, max_size=1)
    try:
        await db.apply_migrations(pool, "variantsvc", migrations("CREATE TABLE widgets (id INT PRIMARY KEY);"))
        insert = "INSERT INTO widgets VALUES ($1) RETURNING id, CASE WHEN id > 10 THEN 1 ELSE 0 END AS variant"
        async with pool.acquire() as conn:
            expected = []
            for widget in (3, 30):
                small, both, big = order_placed(), order_placed(), order_placed()
                written = await outbox.write_then_enqueue(
                    conn, insert, [widget], [small, both, big], variants=[0, 0, 1] if widget == 3 else [0, 1, 1]
                )
                assert written is not None and written["variant"] == (widget > 10)
                expected += [small.event_id, both.event_id] if widget == 3 else [both.event_id, big.event_id]
            rows = await conn.fetch("SELECT event_id FROM outbox ORDER BY id")
            assert [r["event_id"] for r in rows] == expected
            # A write that fails (the key is taken) writes no event, whichever variant it would have been.
            with pytest.raises(asyncpg.UniqueViolationError):
                await outbox.write_then_enqueue(conn, insert, [3], [order_placed()], variants=[0])
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 4
            with pytest.raises(ValueError, match="one variant per event"):
                await outbox.write_then_enqueue(conn, insert, [4], [order_placed()], variants=[0, 1])
    finally:
        await pool.close()


async def test_a_connection_that_took_a_session_lock_is_reset_when_it_goes_back_to_the_pool(database: Any) -> None:
    dsn = await database.provision("resetsvc")
    pool = await db.create_pool(dsn, "resetsvc", min_size=1, max_size=1)
    other = await asyncpg.connect(dsn)
    try:
        async with pool.acquire() as conn:
            db.holds_session_state(conn)
            assert await conn.fetchval("SELECT pg_try_advisory_lock(42)")
            await conn.execute("LISTEN somewhere")
        assert await other.fetchval("SELECT pg_try_advisory_lock(42)"), "released with the connection"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            # A transaction left open is rolled back on release, marked or not.
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TABLE half_done (id INT)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('half_done')") is None
    finally:
        await other.close()
        await pool.close()


async def test_only_outbox_rows_published_longer_ago_than_the_retention_are_pruned(database: Any) -> None:
    from tweetshop_platform import outbox

    dsn = await database.provision("prunesvc")
    pool = await db.create_pool(dsn, "prunesvc", min_size=1, max_size=1)
    try:
        await db.apply_migrations(pool, "prunesvc", db.platform_migrations())
        async with pool.acquire() as conn:

            async def add(published: str | None, n: int) -> None:
                await conn.execute(
                    f"""INSERT INTO outbox (event_id, topic, message_key, event_type, correlation_id, payload,
                                            published_at)
                        SELECT gen_random_uuid(), 't', 'k', 'E', 'c', 'x'::bytea, {published or "NULL"}
                        FROM generate_series(1, {n})"""
                )

            await add("now() - interval '2 days'", 5)  # old enough to go
            await add(None, 2)  # never published: stays, however old
            await add("now() - interval '2 days'", 1)  # old, behind an unpublished row: goes too
            await add("now()", 3)  # published just now: stays
            assert await outbox.prune_published(conn, 86_400, window=4) == 4, "only the 4 oldest rows are looked at"
            assert await outbox.prune_published(conn, 86_400) == 2
            assert await outbox.prune_published(conn, 86_400) == 0
            left = await conn.fetch("SELECT published_at IS NULL AS unpublished FROM outbox ORDER BY id")
            assert [r["unpublished"] for r in left] == [True, True, False, False, False]
    finally:
        await pool.close()


async def test_values_a_column_cannot_take_raise_errors_the_subscriber_parks_at_once(database: Any) -> None:
    """What Postgres and asyncpg really raise for a value past an INT or a VARCHAR: all of it parked at once."""
    dsn = await database.provision("catalog")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE widgets (stock INT, code VARCHAR(3))")
        failures: list[BaseException] = []
        for sql, args in [
            ("INSERT INTO widgets (stock) VALUES ($1)", (2**31,)),  # refused by asyncpg before it is sent
            ("INSERT INTO widgets (stock) VALUES ($1::bigint)", (2**31,)),  # refused by the server
            ("INSERT INTO widgets (code) VALUES ($1)", ("toolong",)),
        ]:
            with pytest.raises(Exception) as raised:
                await conn.execute(sql, *args)
            failures.append(raised.value)
        assert [isinstance(f, consumer.PERMANENT_ERRORS) for f in failures] == [True, True, True], failures
        assert await conn.fetchval("SELECT count(*) FROM widgets") == 0
    finally:
        await conn.close()
