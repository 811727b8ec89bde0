"""A service process outside development exits at start-up, before it connects to anything, with unsafe secrets.

The processes get the environment `make run` gives them (tweetshop_devstack.services.service_env), with
TWEETSHOP_ENVIRONMENT=production instead of development, and a database and a broker that do not answer: a
service that refuses its secrets exits at once with a message saying why; one that accepts them goes on to
wait for its database (and is stopped by its pid).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from tweetshop_devstack.infra import LOCALHOST, ManagedProcess, free_port
from tweetshop_devstack.services import BY_NAME, service_env
from tweetshop_devstack.testing import eventually

NOWHERE = f"{LOCALHOST}:{free_port()}"  # nothing listens there
EXIT_TIMEOUT_S = 60.0
PRODUCTION = {"TWEETSHOP_ENVIRONMENT": "production"}


class Starter:
    """Starts `python -m <service>` with the given variables; every process is stopped by its pid at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(self, service: str, env: Mapping[str, str]) -> ManagedProcess:
        definition = BY_NAME[service]
        variables = service_env(
            definition,
            http_port=free_port(),
            database_url=f"postgresql://{service}:unused@{NOWHERE}/tweetshop",
            kafka_bootstrap=NOWHERE,
            stripe_base_url=f"http://{NOWHERE}",
        )
        inherited = {key: value for key, value in os.environ.items() if not key.upper().startswith("TWEETSHOP_")}
        process = ManagedProcess(
            f"secrets-{service}",
            [sys.executable, "-m", definition.module],
            log_path=self.log_dir / f"{service}-{len(self.processes)}.log",
            env={**inherited, **variables, **env},
        )
        self.processes.append(process)
        process.start()
        return process


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[Starter]:
    started = Starter(tmp_path)
    try:
        yield started
    finally:
        for process in started.processes:
            process.stop(grace=3)  # those waiting for a database that never answers are killed after 3 s


def log_of(process: ManagedProcess) -> str:
    return process.log_path.read_text(encoding="utf-8", errors="replace")


def exit_code(process: ManagedProcess) -> int | None:
    assert process.wait_exit(EXIT_TIMEOUT_S), f"{process.name} did not exit:\n{log_of(process)}"
    return process.reap()


def test_catalog_in_production_with_the_default_operator_key_exits_before_connecting(starter: Starter) -> None:
    process = starter.start("catalog", PRODUCTION)
    assert exit_code(process) == 1
    log = log_of(process)
    assert "catalog refuses to start" in log and "TWEETSHOP_OPERATOR_KEY is a public default" in log, log
    assert "secrets.token_urlsafe(48)" in log, "the message says how to make a key"
    assert "Traceback" not in log, "the reason alone, not a stack trace"
    assert "database not reachable" not in log, "refused before anything connects"


def test_checkout_in_production_with_the_development_stripe_secrets_exits(starter: Starter) -> None:
    process = starter.start("checkout", {**PRODUCTION, "TWEETSHOP_OPERATOR_KEY": secrets.token_urlsafe(48)})
    assert exit_code(process) == 1
    log = log_of(process)
    assert "TWEETSHOP_STRIPE_API_KEY is a public default" in log, log
    assert "TWEETSHOP_STRIPE_WEBHOOK_SECRET is a public default" in log, log
    assert "TWEETSHOP_OPERATOR_KEY" not in log.split("refuses to start", 1)[1].split("Set each")[0], log


def test_tracking_in_production_with_a_short_operator_key_exits(starter: Starter) -> None:
    process = starter.start("tracking", {**PRODUCTION, "TWEETSHOP_OPERATOR_KEY": "tracking-operator-key"})
    assert exit_code(process) == 1
    assert "TWEETSHOP_OPERATOR_KEY is 21 bytes, shorter than 32" in log_of(process)


def test_feed_in_production_with_its_key_in_a_file_gets_past_the_check(starter: Starter, tmp_path: Path) -> None:
    key_file = tmp_path / "operator_key"
    key_file.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
    process = starter.start("feed", {**PRODUCTION, "TWEETSHOP_OPERATOR_KEY_FILE": str(key_file)})
    eventually(lambda: "database not reachable yet" in log_of(process), timeout=EXIT_TIMEOUT_S, what="a DB retry")
    assert process.is_running() and "refuses to start" not in log_of(process)


def test_make_run_and_the_fixtures_run_in_development_with_the_default_key(starter: Starter) -> None:
    process = starter.start("catalog", {})  # what service_env gives: TWEETSHOP_ENVIRONMENT=development
    eventually(lambda: "database not reachable yet" in log_of(process), timeout=EXIT_TIMEOUT_S, what="a DB retry")
    assert process.is_running() and "refuses to start" not in log_of(process)
