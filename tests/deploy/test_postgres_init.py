"""deploy/postgres/initdb, run for real: each service logs in with its compose DSN and reaches only its own schema.

The postgres image runs the script with psql on PATH, POSTGRES_USER and
POSTGRES_DB set; here it runs the same way against a private embedded
Postgres (roles are cluster-wide, so not the session's shared server).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from tweetshop_contracts.system import SYSTEM
from tweetshop_devstack.infra import LOCALHOST, PG_ADMIN_USER, EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[2]
INIT_DIR = ROOT / "deploy" / "postgres" / "initdb"
# Every declared service with a database (tweetshop_contracts.system): the init script's services=(...).
SERVICES = tuple(s.name for s in SYSTEM.with_database())

ServiceEnvironment = Callable[..., dict[str, str]]


@dataclass(frozen=True)
class Cluster:
    postgres: EmbeddedPostgres
    database: str

    def psql(self, dsn: str, sql: str) -> subprocess.CompletedProcess[str]:
        """Run ``sql`` through psql as the DSN's user; the result carries returncode, stdout and stderr."""
        return subprocess.run(
            [str(self.postgres.bin_dir / "psql"), "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-At", "-d", dsn, "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )

    def admin(self, sql: str) -> str:
        result = self.psql(self.postgres.dsn(self.database), sql)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def as_service(self, compose_dsn: str) -> str:
        """The service's compose DSN pointed at this server instead of postgres:5432."""
        parts = urlsplit(compose_dsn)
        netloc = f"{parts.username}:{parts.password}@{LOCALHOST}:{self.postgres.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def run_init_scripts(postgres: EmbeddedPostgres, environment: Mapping[str, str]) -> None:
    """What the image's entrypoint does with /docker-entrypoint-initdb.d/*.sh, in name order."""
    env = {
        **os.environ,
        **environment,
        "PATH": f"{postgres.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PGHOST": LOCALHOST,
        "PGPORT": str(postgres.port),
    }
    for script in sorted(INIT_DIR.glob("*.sh")):
        result = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"


def require_passwords_over_tcp(postgres: EmbeddedPostgres) -> None:
    """Like the image: password (SCRAM) logins for the service roles; the superuser keeps trust for the test."""
    hba = postgres.data_dir / "pg_hba.conf"
    rules = f"host all {PG_ADMIN_USER} {LOCALHOST}/32 trust\nhost all all {LOCALHOST}/32 scram-sha-256\n"
    with hba.open("r+", encoding="utf-8") as file:  # in place: owner and mode stay Postgres'
        original = file.read()
        file.seek(0)
        file.write(rules + original)
        file.truncate()


@pytest.fixture(scope="module")
def cluster(devstack_tmp_dir: Path, compose_services: dict[str, dict[str, Any]]) -> Iterator[Cluster]:
    # devstack's private directory, not pytest's 0700 basetemp: Postgres may run as another system user.
    base = Path(tempfile.mkdtemp(prefix="initdb-", dir=devstack_tmp_dir))
    postgres = EmbeddedPostgres(base / "pgdata", free_port(), base / "logs", tuned_for_tests=True)
    postgres.start()
    try:
        env = compose_services["postgres"]["environment"]
        database = str(env["POSTGRES_DB"])
        cluster = Cluster(postgres, database)
        result = cluster.psql(postgres.admin_dsn, f'CREATE DATABASE "{database}"')
        assert result.returncode == 0, result.stderr
        yield cluster
    finally:
        postgres.stop()


@pytest.fixture(scope="module")
def provisioned(cluster: Cluster, service_environment: ServiceEnvironment) -> Cluster:
    postgres_env = service_environment("postgres")
    run_init_scripts(cluster.postgres, {**postgres_env, "POSTGRES_USER": PG_ADMIN_USER})
    require_passwords_over_tcp(cluster.postgres)
    cluster.admin("SELECT pg_reload_conf()")
    return cluster


def service_dsn(provisioned: Cluster, service_environment: ServiceEnvironment, service: str) -> str:
    return provisioned.as_service(service_environment(service)["TWEETSHOP_DATABASE_URL"])


@pytest.mark.parametrize("service", SERVICES)
def test_service_logs_in_with_its_compose_dsn_and_works_in_its_own_schema(
    provisioned: Cluster, service_environment: ServiceEnvironment, service: str
) -> None:
    dsn = service_dsn(provisioned, service_environment, service)
    result = provisioned.psql(
        dsn,
        "CREATE TABLE IF NOT EXISTS probe (id int); "
        "SELECT current_user, current_setting('search_path'), (SELECT nspname FROM pg_namespace n "
        "JOIN pg_class c ON c.relnamespace = n.oid WHERE c.relname = 'probe' AND n.nspname = current_schema)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{service}|{service}|{service}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_role_reaches_no_other_schema_and_cannot_create_in_public(
    provisioned: Cluster, service_environment: ServiceEnvironment, service: str
) -> None:
    for other in SERVICES:
        provisioned.admin(
            f'CREATE TABLE IF NOT EXISTS "{other}".owned (id int); ALTER TABLE "{other}".owned OWNER TO "{other}"'
        )
    dsn = service_dsn(provisioned, service_environment, service)
    for other in SERVICES:
        if other == service:
            continue
        read = provisioned.psql(dsn, f'SELECT * FROM "{other}".owned')
        assert read.returncode != 0 and "permission denied for schema" in read.stderr, read.stderr
    public = provisioned.psql(dsn, "CREATE TABLE public.intruder (id int)")
    assert public.returncode != 0 and "permission denied for schema public" in public.stderr, public.stderr


def test_a_wrong_password_is_refused(provisioned: Cluster, service_environment: ServiceEnvironment) -> None:
    parts = urlsplit(service_dsn(provisioned, service_environment, "catalog"))
    wrong = parts._replace(netloc=f"catalog:not-the-password@{parts.hostname}:{parts.port}").geturl()
    result = provisioned.psql(wrong, "SELECT 1")
    assert result.returncode != 0 and "password authentication failed" in result.stderr, result.stderr
