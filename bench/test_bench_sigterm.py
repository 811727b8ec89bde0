"""A benchmark ended by SIGTERM stops what it started (``stack.stop_on_signals``), as one ended by Ctrl-C does,
and the signals that come while it stops do not cut the stopping short."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.common.stack import REPO_ROOT

# A benchmark's shape in miniature: a child process started by pid, stopped in a ``finally``.
BENCH = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bench.common.stack import stop_on_signals
    from tweetshop_devstack.infra import ManagedProcess

    stop_on_signals()
    child = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"],
                           log_path=Path(sys.argv[1]) / "sleeper.log")
    child.start()
    try:
        print(child.pid, flush=True)
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        time.sleep(1)  # a stop that takes a while: more signals come meanwhile
        child.stop(5)
        print("stopped", flush=True)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(pid, 0): it has exited, its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_benchmark_killed_with_sigterm_stops_its_child_processes_whatever_signals_follow(tmp_path: Path) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", BENCH, str(tmp_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    child_pid = 0
    try:
        assert bench.stdout is not None
        child_pid = int(bench.stdout.readline())
        assert _alive(child_pid)
        bench.send_signal(signal.SIGTERM)
        assert bench.stdout.readline().strip() == "interrupted", "SIGTERM did not end the run as Ctrl-C does"
        bench.send_signal(signal.SIGTERM)  # run_all passing it on
        bench.send_signal(signal.SIGINT)  # the terminal's Ctrl-C
        out, _ = bench.communicate(timeout=30)
        assert "stopped" in out, "a second signal cut the stopping short"
        deadline = time.monotonic() + 10
        while _alive(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child_pid), "the benchmark's child outlived it"
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        if child_pid and _alive(child_pid):
            os.kill(child_pid, signal.SIGKILL)
