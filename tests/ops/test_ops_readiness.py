"""/readyz turns unready while the database or the broker is gone and ready again when it returns, without a
restart of the service. The test owns its broker and Postgres: the session's are shared with other tests."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tweetshop_devstack.infra import EmbeddedPostgres, Tansu, free_port
from tweetshop_devstack.services import dev_password, service_dsn
from tweetshop_devstack.testing import run_sync
from tweetshop_platform.db import provision_service


@pytest.fixture
def private_infra(tmp_path: Path) -> Iterator[tuple[Tansu, EmbeddedPostgres]]:
    """A broker and a Postgres server only this test uses (and may stop)."""
    # Postgres may run as another system user: a world-readable parent, not pytest's 0700 tmp_path.
    base = Path("/tmp") / f"tweetshop-readyz-{uuid.uuid4().hex[:8]}"
    base.mkdir(mode=0o755)
    tansu = Tansu(free_port(), tmp_path / "logs")
    postgres = EmbeddedPostgres(base / "pgdata", free_port(), tmp_path / "logs", tuned_for_tests=True)
    try:
        tansu.start()
        postgres.start()
        yield tansu, postgres
    finally:
        tansu.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def _readiness(base_url: str) -> tuple[int, dict[str, str]]:
    try:
        response = httpx.get(f"{base_url}/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return 0, {"error": repr(exc)}
    return response.status_code, response.json().get("checks", {})


def test_readyz_follows_the_database_and_the_broker_away_and_back_without_a_restart(
    service_process: Any, private_infra: tuple[Tansu, EmbeddedPostgres], ops: Any
) -> None:
    tansu, postgres = private_infra
    run_sync(provision_service(postgres.admin_dsn, "catalog", dev_password("catalog")))
    catalog = service_process.start(
        "catalog",
        env={
            "TWEETSHOP_DATABASE_URL": service_dsn(postgres.admin_dsn, "catalog", dev_password("catalog")),
            "TWEETSHOP_KAFKA_BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
        },
    )
    pid = catalog.pid
    assert _readiness(catalog.base_url)[0] == 200

    def state(expected_status: int, dependency: str, expected: str) -> bool:
        status, checks = _readiness(catalog.base_url)
        return status == expected_status and checks.get(dependency, "").startswith(expected)

    postgres.stop()
    ops.eventually(lambda: state(503, "database", "unavailable"), what="unready without the database")
    assert _readiness(catalog.base_url)[1]["broker"] == "ok"
    postgres.start()
    ops.eventually(lambda: state(200, "database", "ok"), what="ready again with the database back")
    created = httpx.post(f"{catalog.base_url}/merchants", json={"handle": "back_again", "name": "Back"}, timeout=10)
    assert created.status_code == 201, created.text

    tansu.stop()
    ops.eventually(lambda: state(503, "broker", "unavailable"), what="unready without the broker")
    assert _readiness(catalog.base_url)[1]["database"] == "ok"
    tansu.start()
    ops.eventually(lambda: state(200, "broker", "ok"), what="ready again with the broker back")

    assert catalog.pid == pid and catalog.is_running(), "the service was not restarted"
