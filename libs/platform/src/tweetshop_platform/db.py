"""Postgres: per-service role and schema, connection pools, numbered migrations under an advisory lock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant shared by every process; the schema name is the second key.
_PROVISION_LOCK = 7_210_001
_MIGRATION_LOCK = 7_210_002


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


async def provision_service(admin_dsn: str, service: str, password: str) -> None:
    """Create (or update) the service's login role and its own schema; idempotent.

    The role owns only its schema and can reach no other: schemas of other
    services are owned by their roles and grant nothing to PUBLIC.
    """
    role = _check_identifier(service)
    conn: asyncpg.Connection = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PROVISION_LOCK)
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            quoted_password = await conn.fetchval("SELECT quote_literal($1)", password)
            if exists:
                await conn.execute(f"ALTER ROLE {role} WITH LOGIN PASSWORD {quoted_password}")
            else:
                await conn.execute(f"CREATE ROLE {role} WITH LOGIN PASSWORD {quoted_password}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {role} AUTHORIZATION {role}")
            await conn.execute(f"REVOKE ALL ON SCHEMA {role} FROM PUBLIC")
            await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            database = await conn.fetchval("SELECT current_database()")
            await conn.execute(f'ALTER ROLE {role} IN DATABASE "{database}" SET search_path = {role}')
    finally:
        await conn.close()


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


# Server process ids of pooled connections that took session state (a session advisory lock, LISTEN).
_SESSION_STATE: set[int] = set()


def holds_session_state(conn: asyncpg.Connection) -> None:
    """Mark a pooled connection that takes a session advisory lock or LISTENs: it gets asyncpg's full reset
    when it goes back to the pool. Every other connection skips that round trip (see ``_reset``)."""
    _SESSION_STATE.add(conn.get_server_pid())


async def _reset(conn: asyncpg.Connection) -> None:
    # asyncpg resets every connection it takes back with a query (unlock all advisory locks, close cursors,
    # UNLISTEN, RESET ALL): one more round trip per transaction. Our connections set nothing for the session
    # (search_path and the application name are connection parameters), except the ones marked above.
    # An open transaction is rolled back by asyncpg itself before this is called.
    pid = conn.get_server_pid()
    if pid in _SESSION_STATE:
        _SESSION_STATE.discard(pid)
        await conn.execute(conn.get_reset_query())


async def create_pool(dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections use the service's schema and JSON codecs."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset,
        server_settings={"search_path": _check_identifier(schema), "application_name": schema},
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def wait_for_pool(dsn: str, schema: str, *, min_size: int, max_size: int, timeout: float = 60) -> asyncpg.Pool:
    """Create the pool, retrying while the database is not reachable yet (start-up ordering)."""
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.2
    while True:
        try:
            return await create_pool(dsn, schema, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("database not reachable yet", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3)


@dataclass(frozen=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: str, folder: Traversable) -> list[Migration]:
    """Numbered ``NNNN_name.sql`` files of one folder, in order; gaps or duplicates are an error."""
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(source, int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise RuntimeError(f"{source} migrations must be numbered 0001, 0002, ... without gaps: {migration.name}")
    return found


def platform_migrations() -> list[Migration]:
    """The backbone's own tables (outbox, inbox), applied before the service's."""
    return load_migrations("platform", resources.files("tweetshop_platform") / "migrations")


async def apply_migrations(pool: asyncpg.Pool, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is not applied yet, each file in its own transaction, under an advisory lock.

    Applied files are append-only: a changed checksum stops start-up.
    """
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        holds_session_state(conn)
        await conn.execute("SELECT pg_advisory_lock($1, hashtext($2))", _MIGRATION_LOCK, schema)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       source TEXT NOT NULL, version INT NOT NULL, name TEXT NOT NULL,
                       checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                       PRIMARY KEY (source, version))"""
            )
            rows = await conn.fetch("SELECT source, version, name, checksum FROM schema_migrations")
            done = {(r["source"], r["version"]): r for r in rows}
            for migration in migrations:
                previous = done.get((migration.source, migration.version))
                if previous is not None:
                    if previous["checksum"] != migration.checksum:
                        raise RuntimeError(
                            f"applied migration {migration.source}/{migration.name} was edited; "
                            "migrations are append-only: add a new numbered file instead"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (source, version, name, checksum) VALUES ($1, $2, $3, $4)",
                        migration.source,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(f"{migration.source}/{migration.name}")
                log.info("migration applied", migration=migration.name, source=migration.source)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _MIGRATION_LOCK, schema)
    return applied_now


def row_to_dict(row: asyncpg.Record) -> dict[str, Any]:
    """A record as a plain dict."""
    return dict(row.items())
