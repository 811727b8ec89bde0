"""The `make run` supervisor: dead children come back, with backoff; stopping ends every child and what it spawned."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
from tweetshop_devstack.supervisor import Backoff, ChildSpec, Supervisor
from tweetshop_devstack.testing import eventually

SLEEPER = [sys.executable, "-c", "import time; time.sleep(100)"]


wait_for = functools.partial(eventually, timeout=10.0, interval=0.02)


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def spec(tmp_path: Path, name: str, argv: list[str] = SLEEPER) -> ChildSpec:
    return ChildSpec(name, argv, tmp_path / f"{name}.log")


def test_a_child_that_dies_is_restarted_and_the_restart_is_reported(tmp_path: Path) -> None:
    messages: list[str] = []
    supervisor = Supervisor([spec(tmp_path, "sleeper")], initial_backoff=0.05, report=messages.append)
    supervisor.start()
    try:
        first = supervisor.pid("sleeper")
        assert first is not None
        os.kill(first, signal.SIGKILL)

        def restarted() -> int | None:
            supervisor.check()
            pid = supervisor.pid("sleeper")
            return pid if pid not in (None, first) else None

        second = wait_for(restarted)
        assert psutil.Process(second).is_running()
        assert gone(first)
        assert supervisor.restarts("sleeper") == 1
        assert any("sleeper" in m and "exited with code -9" in m for m in messages), messages
        assert any("restarting sleeper" in m for m in messages), messages
    finally:
        supervisor.stop()


def test_run_keeps_supervising_until_its_stop_event_is_set(tmp_path: Path) -> None:
    supervisor = Supervisor([spec(tmp_path, "sleeper")], initial_backoff=0.05, report=lambda _: None)
    supervisor.start()
    stop_event = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop_event, 0.02))
    thread.start()
    try:
        first = supervisor.pid("sleeper")
        assert first is not None
        os.kill(first, signal.SIGTERM)
        wait_for(lambda: supervisor.pid("sleeper") not in (None, first))
    finally:
        stop_event.set()
        thread.join(5)
        supervisor.stop()
    assert not thread.is_alive()


def test_stop_ends_every_child_and_nothing_is_restarted_afterwards(tmp_path: Path) -> None:
    supervisor = Supervisor([spec(tmp_path, "one"), spec(tmp_path, "two")], initial_backoff=0.01, report=lambda _: None)
    supervisor.start()
    pids = [supervisor.pid("one"), supervisor.pid("two")]
    assert all(pid is not None and psutil.pid_exists(pid) for pid in pids)

    supervisor.stop()
    time.sleep(0.05)
    supervisor.check()

    assert all(pid is not None and gone(pid) for pid in pids)
    assert supervisor.pid("one") is None and supervisor.pid("two") is None


def test_stop_also_ends_what_a_child_spawned(tmp_path: Path) -> None:
    parent = [
        sys.executable,
        "-c",
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)']);"
        "print('grandchild', p.pid, flush=True); time.sleep(100)",
    ]
    supervisor = Supervisor([spec(tmp_path, "parent", parent)], report=lambda _: None)
    supervisor.start()
    log = tmp_path / "parent.log"
    line = wait_for(lambda: next((x for x in log.read_text().splitlines() if x.startswith("grandchild")), None))
    grandchild = int(line.split()[1])

    supervisor.stop()

    assert wait_for(lambda: gone(grandchild), timeout=5)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('ready', flush=True); time.sleep(100)",
    ]
    supervisor = Supervisor([spec(tmp_path, "stubborn", stubborn)], stop_grace=0.5, report=lambda _: None)
    supervisor.start()
    wait_for(lambda: "ready" in (tmp_path / "stubborn.log").read_text().splitlines())
    pid = supervisor.pid("stubborn")
    assert pid is not None

    started = time.monotonic()
    supervisor.stop()

    assert gone(pid)
    assert 0.4 < time.monotonic() - started < 5


def test_restart_delays_double_up_to_the_cap_and_reset_after_a_stable_run() -> None:
    backoff = Backoff(initial=1.0, cap=30.0, stable_after=60.0)

    crash_loop = [backoff.next_delay(uptime=0.5) for _ in range(7)]
    after_a_long_run = backoff.next_delay(uptime=61.0)

    assert crash_loop == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert after_a_long_run == 1.0


def test_a_child_in_a_crash_loop_waits_longer_each_time(tmp_path: Path) -> None:
    now = [0.0]
    crasher = [sys.executable, "-c", "raise SystemExit(3)"]
    messages: list[str] = []
    supervisor = Supervisor(
        [spec(tmp_path, "crasher", crasher)], initial_backoff=1.0, report=messages.append, clock=lambda: now[0]
    )
    supervisor.start()
    try:
        delays = []
        for _ in range(3):
            process = supervisor.process("crasher")
            wait_for(process.has_exited)
            supervisor.check()  # notices the exit, schedules the restart
            delay = float(messages[-1].split("restarting in ")[1].split(" s")[0])
            delays.append(delay)
            now[0] += delay - 0.01
            supervisor.check()
            assert supervisor.restarts("crasher") == len(delays) - 1, "restarted before its delay was over"
            now[0] += 0.02
            supervisor.check()  # restarts it
        assert delays == [1.0, 2.0, 4.0]
        assert supervisor.restarts("crasher") == 3
        assert "exited with code 3" in messages[0]
    finally:
        supervisor.stop()
