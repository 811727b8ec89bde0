"""The shared fixtures: a private database per test, services wired to the test's infrastructure, always cleaned up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from tweetshop_devstack.pytest_plugin import ScratchDatabase, ServiceProcesses
from tweetshop_devstack.services import ServiceDef
from tweetshop_devstack.testing import dsn_with_database, run_sync


async def test_each_service_gets_a_role_that_owns_its_schema_and_cannot_read_another(
    database: ScratchDatabase,
) -> None:
    catalog_dsn = await database.provision("catalog")
    feed_dsn = await database.provision("feed")

    catalog = await asyncpg.connect(catalog_dsn)
    feed = await asyncpg.connect(feed_dsn)
    try:
        await catalog.execute("CREATE TABLE products (id int PRIMARY KEY)")
        await catalog.execute("INSERT INTO products VALUES (1)")
        who = await catalog.fetchrow("SELECT current_user, current_database(), current_schema()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await feed.fetch("SELECT * FROM catalog.products")
    finally:
        await catalog.close()
        await feed.close()

    assert tuple(who) == ("catalog", database.name, "catalog")


def test_sync_tests_can_provision_too(database: ScratchDatabase) -> None:
    dsn = database.provision_sync("tracking")

    async def whoami() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return str(await conn.fetchval("SELECT current_user || '@' || current_database()"))
        finally:
            await conn.close()

    assert run_sync(whoami()) == f"tracking@{database.name}"


def test_a_service_is_wired_to_the_tests_database_and_broker_and_survives_kill_and_restart(
    service_process: ServiceProcesses, database: ScratchDatabase, kafka_bootstrap: str, fake_service: ServiceDef
) -> None:
    service = service_process.start(fake_service)
    env = httpx.get(f"{service.base_url}/env").json()

    assert env["TWEETSHOP_HTTP_PORT"] == str(service.port)
    assert env["TWEETSHOP_DATABASE_URL"] == database.service_dsn("devstack_fake") == service.database_url
    assert env["TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS"] == kafka_bootstrap
    assert env["TWEETSHOP_TOPIC_NAMESPACE"] == service_process.topic_namespace != ""

    first_pid = service.pid
    assert service.kill() == -9
    assert not service.is_running()
    service.start()
    assert service.pid != first_pid
    assert httpx.get(f"{service.base_url}/readyz").status_code == 200

    service.restart()
    assert httpx.get(f"{service.base_url}/readyz").status_code == 200
    assert "fake service listening" in service.tail()


def test_several_services_start_together_each_with_its_own_port_and_role(
    service_process: ServiceProcesses, database: ScratchDatabase, fake_service: ServiceDef
) -> None:
    other = replace(fake_service, name="devstack_fake_two")

    first, second = service_process.start_many([fake_service, other])

    assert first.port != second.port
    assert first.port == service_process.port_for("devstack_fake")
    envs = [httpx.get(f"{s.base_url}/env").json() for s in (first, second)]
    assert [e["TWEETSHOP_DATABASE_URL"] for e in envs] == [
        database.service_dsn("devstack_fake"),
        database.service_dsn("devstack_fake_two"),
    ]


def test_a_service_that_never_gets_ready_fails_with_its_log(
    service_process: ServiceProcesses, fake_service: ServiceDef
) -> None:
    # The stand-in crashes at start-up on a bad setting, as a misconfigured service would.
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 1 .*could not convert string to float"):
        service_process.start(fake_service, {"FAKE_START_DELAY_S": "not a number"})


def test_services_and_the_database_are_cleaned_up_even_when_the_test_fails(
    tmp_path: Path, kafka_bootstrap: str, kafka_is_apache: bool, postgres_admin_dsn: str, fake_service: ServiceDef
) -> None:
    evidence = tmp_path / "evidence.txt"
    inner = tmp_path / "inner" / "test_inner.py"
    inner.parent.mkdir()
    inner.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path
            from tweetshop_devstack.services import ServiceDef

            def test_fails(service_process, database):
                fake = ServiceDef("devstack_fake", {fake_service.module!r}, 0, extra_env={fake_service.extra_env!r})
                service = service_process.start(fake)
                Path({str(evidence)!r}).write_text(f"{{service.pid}} {{database.name}}")
                assert False, "the test failed on purpose"
            """
        )
    )
    env = {
        **os.environ,
        "TWEETSHOP_TEST_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TWEETSHOP_TEST_KAFKA_IS_APACHE": str(kafka_is_apache).lower(),
        "TWEETSHOP_TEST_POSTGRES_DSN": postgres_admin_dsn,
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tweetshop_devstack.pytest_plugin",
            "-p",
            "no:cacheprovider",
            str(inner),
        ],
        cwd=inner.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    assert "the test failed on purpose" in output
    assert "devstack_fake log, last" in output and "fake service listening" in output, output
    pid_text, database_name = evidence.read_text().split()
    pid = int(pid_text)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    async def database_exists() -> bool:
        conn = await asyncpg.connect(dsn_with_database(postgres_admin_dsn, "postgres"))
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database_name))
        finally:
            await conn.close()

    assert not run_sync(database_exists())
