"""The benchmarks' statement meter: each role's SQL statements in one database, counted by pg_stat_statements on a
Postgres of its own that preloads it, and nothing (not a wrong figure) on one that does not."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from tweetshop_devstack.infra import EmbeddedPostgres, free_port
from tweetshop_devstack.testing import create_database, dsn_with_database, run_sync

from bench.common.statements import TRANSACTIONS, WAL_BYTES, StatementMeter, per_order


@pytest.fixture
def counting_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    # Postgres may run as another system user: a world-readable parent, not pytest's 0700 tmp_path.
    base = Path("/tmp") / f"tweetshop-stmts-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    postgres = EmbeddedPostgres(
        base / "pgdata", free_port(), tmp_path / "logs", tuned_for_tests=True, stat_statements=True
    )
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_per_order_divides_each_roles_statements_by_the_orders() -> None:
    before = {"checkout": 100, "catalog": 50, TRANSACTIONS: 10, WAL_BYTES: 1_000}
    after = {"checkout": 300, "catalog": 90, "feed": 4, TRANSACTIONS: 50, WAL_BYTES: 41_002}
    assert per_order(before, after, 4, ("checkout", "catalog", "feed")) == {
        "checkout": 50.0,
        "catalog": 10.0,
        "feed": 1.0,
        "statements": 61.0,
        TRANSACTIONS: 10.0,
        WAL_BYTES: 10_000,
    }
    assert per_order(None, after, 4, ("checkout",)) is None  # Postgres did not count
    assert per_order(before, after, 0, ("checkout",)) is None


def test_the_meter_counts_a_roles_statements_in_its_database(counting_postgres: EmbeddedPostgres) -> None:
    async def scenario() -> tuple[dict[str, int] | None, dict[str, int] | None]:
        database = "stmts"
        await create_database(counting_postgres.admin_dsn, database)
        admin = await asyncpg.connect(dsn_with_database(counting_postgres.admin_dsn, database))
        try:
            await admin.execute("CREATE ROLE counted LOGIN")
        finally:
            await admin.close()
        meter = StatementMeter(counting_postgres.admin_dsn, database)
        before = await meter.snapshot()
        conn = await asyncpg.connect(dsn_with_database(counting_postgres.admin_dsn, database), user="counted")
        try:
            for i in range(7):
                await conn.fetchval("SELECT $1::int + 1", i)
            async with conn.transaction():
                await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        admin = await asyncpg.connect(dsn_with_database(counting_postgres.admin_dsn, database))
        try:
            await admin.execute("CREATE TABLE logged AS SELECT g FROM generate_series(1, 1000) AS g")
        finally:
            await admin.close()
        assert before is not None
        # A backend reports its WAL to the statistics at most once a second, and at its exit: wait for it.
        for _ in range(50):
            after = await meter.snapshot()
            if after is None or after[WAL_BYTES] - before[WAL_BYTES] > 1000 * 4:
                break
            await asyncio.sleep(0.2)
        return before, after

    before, after = run_sync(scenario())
    assert before is not None and after is not None
    # 7 statements, then BEGIN, one statement and COMMIT (asyncpg's own introspection, if any, runs as the role
    # too, so at least these).
    assert after.get("counted", 0) - before.get("counted", 0) >= 10
    assert after[TRANSACTIONS] > before[TRANSACTIONS]
    assert after[WAL_BYTES] - before[WAL_BYTES] > 1000 * 4, "a thousand rows written went into the WAL"


def test_the_meter_counts_nothing_where_postgres_does_not(postgres_admin_dsn: str) -> None:
    # The test session's Postgres does not preload pg_stat_statements: no figure rather than a wrong one.
    meter = StatementMeter(postgres_admin_dsn, "postgres")
    counted = run_sync(meter.snapshot())
    if counted is not None:
        pytest.skip("this session's Postgres preloads pg_stat_statements")
    assert meter.available is False
