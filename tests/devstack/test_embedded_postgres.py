"""Embedded Postgres as `make run` uses it: a TCP server we own, whose data survives restarts and crashes."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
from tweetshop_devstack.infra import EmbeddedPostgres, PortInUseError, free_port
from tweetshop_devstack.testing import fetch


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Outside pytest's 0700 basetemp: as root, Postgres runs as another system user that must reach its data.
    path = Path(tempfile.mkdtemp(prefix="devstack-pg-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def fetch_notes(dsn: str) -> list[str]:
    return [r["body"] for r in await fetch(dsn, "SELECT body FROM notes ORDER BY id")]


async def add_note(dsn: str, body: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, body text NOT NULL)")
        await conn.execute("INSERT INTO notes (body) VALUES ($1)", body)
    finally:
        await conn.close()


async def test_data_survives_a_stop_and_a_crash_of_the_server(scratch_dir: Path) -> None:
    port = free_port()
    postgres = EmbeddedPostgres(scratch_dir / "pgdata", port, scratch_dir / "logs")
    postgres.start()
    try:
        await add_note(postgres.admin_dsn, "before stop")
        postgres.stop()
        assert not postgres.process.is_running()

        postgres.start()
        await add_note(postgres.admin_dsn, "before crash")
        crashed_pid = postgres.pid
        postgres.process.kill()  # leaves a stale postmaster.pid behind, as a killed `make run` would

        postgres.start()
        assert postgres.pid != crashed_pid
        assert await fetch_notes(postgres.admin_dsn) == ["before stop", "before crash"]
    finally:
        postgres.stop()


async def test_a_server_left_running_by_a_killed_parent_is_replaced_by_one_we_own(scratch_dir: Path) -> None:
    port = free_port()
    orphan = EmbeddedPostgres(scratch_dir / "pgdata", port, scratch_dir / "logs")
    orphan.start()
    orphan_pid = orphan.pid
    assert orphan_pid is not None
    await add_note(orphan.admin_dsn, "kept")

    # A new `make run` knows nothing of the orphan but its data directory and port.
    fresh = EmbeddedPostgres(scratch_dir / "pgdata", port, scratch_dir / "logs")
    try:
        fresh.start()
        assert fresh.pid != orphan_pid
        assert not psutil.pid_exists(orphan_pid) or psutil.Process(orphan_pid).status() == psutil.STATUS_ZOMBIE
        assert await fetch_notes(fresh.admin_dsn) == ["kept"]
    finally:
        fresh.stop()
        orphan.stop()


def test_a_taken_port_is_reported_by_number(scratch_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        postgres = EmbeddedPostgres(scratch_dir / "pgdata", port, scratch_dir / "logs")
        with pytest.raises(PortInUseError, match=f"port {port} .*Postgres"):
            postgres.start()
    assert postgres.pid is None
