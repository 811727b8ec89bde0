"""SQL statements and transactions each service sends to Postgres, counted by Postgres itself.

Every round trip to the database costs the service and Postgres CPU (about 0.1 ms between them on this kind of
machine, more through a pool), so "statements per order" is a figure of the pipeline's cost, as CPU per order
is. ``pg_stat_statements`` counts every statement (``BEGIN`` and ``COMMIT`` too) per role, and each service
connects as its own role; ``pg_stat_database`` counts the database's committed transactions (an autocommit
statement is one). ``pg_stat_wal`` counts the bytes written to the write-ahead log (the whole server's: the
benchmark's database is the only busy one), a figure of Postgres' work that drifts far less than its CPU does.

The benchmark's own Postgres preloads the extension (``EmbeddedPostgres(stat_statements=True)``); against a
server that does not, the meter says so once and counts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

TRANSACTIONS = "transactions"  # the key of the database's committed transactions in a snapshot
WAL_BYTES = "wal_bytes"  # the key of the server's write-ahead log bytes in a snapshot


@dataclass
class StatementMeter:
    """Snapshots of statements per role (and transactions) in one database; their difference is a phase's."""

    admin_dsn: str  # a superuser's DSN (any database: the views cover them all)
    database: str
    available: bool = True

    async def snapshot(self) -> dict[str, int] | None:
        """Statements so far per role in the database, with ``TRANSACTIONS``; None when Postgres does not count."""
        if not self.available:
            return None
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                rows = await conn.fetch(
                    """SELECT r.rolname AS role, sum(s.calls)::bigint AS calls
                       FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
                       WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = $1)
                       GROUP BY r.rolname""",
                    self.database,
                )
            except asyncpg.PostgresError:
                # "must be loaded via shared_preload_libraries", or no such extension on this server.
                self.available = False
                return None
            # Backends flush their transaction counts now and then; ask for what is pending to be counted.
            await conn.execute("SELECT pg_stat_force_next_flush()")
            committed = await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", self.database
            )
            wal_bytes = await conn.fetchval("SELECT wal_bytes::bigint FROM pg_stat_wal")
        finally:
            await conn.close()
        counts = {row["role"]: int(row["calls"]) for row in rows}
        counts[TRANSACTIONS] = int(committed or 0)
        counts[WAL_BYTES] = int(wal_bytes or 0)
        return counts


def per_order(
    before: Mapping[str, int] | None, after: Mapping[str, int] | None, orders: int, roles: tuple[str, ...]
) -> dict[str, float] | None:
    """Statements per order of each role in ``roles``, all of them together (``statements``), and transactions
    per order (the whole database's, the benchmark's own reads included) and the server's WAL bytes per order;
    None when nothing was counted."""
    if before is None or after is None or orders <= 0:
        return None
    out = {role: round((after.get(role, 0) - before.get(role, 0)) / orders, 2) for role in roles}
    out["statements"] = round(sum(out[role] for role in roles), 2)
    out[TRANSACTIONS] = round((after.get(TRANSACTIONS, 0) - before.get(TRANSACTIONS, 0)) / orders, 2)
    out[WAL_BYTES] = round((after.get(WAL_BYTES, 0) - before.get(WAL_BYTES, 0)) / orders)
    return out
