"""`make run` (tweetshop_devstack.run) with a stand-in service: start, supervise, stop on SIGTERM, keep data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from tweetshop_devstack import run
from tweetshop_devstack.infra import answers_200, free_port
from tweetshop_devstack.services import ServiceDef
from tweetshop_devstack.testing import run_sync


@pytest.fixture
def repo_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Stands for the repository root (`make run` keeps its state in ./.run) with free infrastructure ports."""
    # Outside pytest's 0700 basetemp: as root, Postgres runs as another system user that must reach .run/pgdata.
    path = Path(tempfile.mkdtemp(prefix="devstack-run-test-"))
    monkeypatch.chdir(path)
    monkeypatch.setenv("TWEETSHOP_DEV_PG_PORT", str(free_port()))
    monkeypatch.setenv("TWEETSHOP_DEV_KAFKA_PORT", str(free_port()))
    monkeypatch.setenv("TWEETSHOP_DEV_STRIPE_PORT", str(free_port()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def recorded_pids(repo: Path) -> dict[str, int]:
    try:
        return {name: entry["pid"] for name, entry in json.loads((repo / ".run/pids.json").read_text()).items()}
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_sigterm_stops_every_child_after_a_crashed_service_was_restarted(
    repo_dir: Path, fake_service: ServiceDef, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, int] = {}
    problems: list[str] = []

    def operate() -> None:
        # Plays the developer: waits for the stack, crashes the service, waits for its restart, presses "Ctrl-C".
        try:
            deadline = time.monotonic() + 60
            while not {"postgres", "tansu", "localstripe", fake_service.name} <= recorded_pids(repo_dir).keys():
                assert time.monotonic() < deadline, "the stack did not start"
                time.sleep(0.1)
            while not answers_200(f"http://127.0.0.1:{fake_service.port}/readyz", timeout=5.0):
                assert time.monotonic() < deadline, "the service did not get ready"
                time.sleep(0.1)
            seen.update(recorded_pids(repo_dir))
            os.kill(seen[fake_service.name], signal.SIGKILL)
            while recorded_pids(repo_dir).get(fake_service.name) in (None, seen[fake_service.name]):
                assert time.monotonic() < deadline, "the crashed service was not restarted"
                time.sleep(0.1)
            seen["restarted"] = recorded_pids(repo_dir)[fake_service.name]
        except Exception as exc:
            problems.append(repr(exc))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    operator = threading.Thread(target=operate)
    operator.start()
    try:
        code = run.main(["--no-seed"], services=[fake_service])
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
        operator.join(10)
    output = capsys.readouterr().out

    assert not problems, (problems, output)
    assert code == 0, output
    assert {"postgres", "tansu", "localstripe", fake_service.name, "restarted"} <= seen.keys()
    assert all(gone(pid) for pid in seen.values()), seen
    assert f"{fake_service.name} (pid {seen[fake_service.name]}) exited with code -9" in output
    assert f"{fake_service.name} | fake service listening" in output  # service logs are echoed with a prefix
    assert not (repo_dir / ".run/pids.json").exists()


def test_a_second_run_keeps_the_database_and_provisions_again(repo_dir: Path, fake_service: ServiceDef) -> None:
    def one_run(sql: str) -> list[str]:
        stack = run.DevStack(repo_dir, run.ports_from_env(), echo_logs=False, seed=False, services=[fake_service])
        try:
            stack.start()
            env = httpx.get(f"http://127.0.0.1:{fake_service.port}/env").json()
            return run_sync(execute(env["TWEETSHOP_DATABASE_URL"], sql))
        finally:
            stack.stop()

    async def execute(dsn: str, sql: str) -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
            return [r["note"] for r in await conn.fetch("SELECT note FROM notes ORDER BY note")]
        finally:
            await conn.close()

    first = one_run("CREATE TABLE notes (note text); INSERT INTO notes VALUES ('first run')")
    second = one_run("INSERT INTO notes VALUES ('second run')")

    assert first == ["first run"]
    assert second == ["first run", "second run"]


def test_a_taken_port_is_named_with_the_variable_that_moves_it(repo_dir: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tweetshop_devstack.run", "--no-seed", "--quiet"],
            env={**os.environ, "TWEETSHOP_DEV_PG_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {port} (postgres) is already in use" in result.stdout
    assert "TWEETSHOP_DEV_PG_PORT=<port>" in result.stdout
    assert not (repo_dir / ".run/pgdata").exists(), "nothing should start when a port is taken"
