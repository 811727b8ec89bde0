"""Keep child processes running: one that dies is restarted with exponential backoff (compose's `unless-stopped`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .infra import DEFAULT_STOP_GRACE_S, ManagedProcess, stop_all


@dataclass(frozen=True)
class ChildSpec:
    """What to run for one supervised child."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None


class Backoff:
    """Restart delays: ``initial``, doubling up to ``cap``; reset once a child stayed up ``stable_after`` seconds."""

    def __init__(self, initial: float = 1.0, cap: float = 30.0, stable_after: float = 60.0) -> None:
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self._next = initial

    def next_delay(self, uptime: float) -> float:
        """The delay before restarting a child that died after running ``uptime`` seconds."""
        if uptime >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay


@dataclass
class _Child:
    spec: ChildSpec
    process: ManagedProcess
    backoff: Backoff
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0


def _print_report(message: str) -> None:
    print(f"supervisor | {message}", flush=True)


class Supervisor:
    """Starts children, restarts those that die (with backoff) and stops them all, by pid."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        stable_after: float = 60.0,
        stop_grace: float = DEFAULT_STOP_GRACE_S,
        report: Callable[[str], None] = _print_report,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len({s.name for s in specs}) != len(specs):
            raise ValueError("child names must be unique")
        self._children = {
            spec.name: _Child(
                spec,
                ManagedProcess(spec.name, spec.argv, log_path=spec.log_path, env=spec.env, cwd=spec.cwd),
                Backoff(initial_backoff, max_backoff, stable_after),
            )
            for spec in specs
        }
        self._stop_grace = stop_grace
        self._report = report
        self._clock = clock
        self._stopping = False
        # check() runs in the supervising thread, stop() may come from another: one at a time.
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Names of the supervised children, in start order."""
        return list(self._children)

    def pid(self, name: str) -> int | None:
        """Pid of the child's current process (None while it waits to be restarted)."""
        child = self._children[name]
        return child.process.pid if child.restart_at is None and child.process.is_running() else None

    def restarts(self, name: str) -> int:
        """How many times the child was restarted."""
        return self._children[name].restarts

    def process(self, name: str) -> ManagedProcess:
        """The child's process handle (its log path, its tail)."""
        return self._children[name].process

    def start(self) -> None:
        """Start every child."""
        with self._lock:
            for child in self._children.values():
                self._launch(child)

    def check(self) -> None:
        """One supervision pass: notice children that died, restart those whose backoff is over."""
        with self._lock:
            if self._stopping:
                return
            now = self._clock()
            for child in self._children.values():
                if child.restart_at is not None:
                    if now >= child.restart_at:
                        child.restarts += 1
                        self._report(f"restarting {child.spec.name} (restart #{child.restarts})")
                        self._launch(child)
                elif child.process.has_exited():
                    code = child.process.reap()
                    uptime = now - child.started_at
                    delay = child.backoff.next_delay(uptime)
                    child.restart_at = now + delay
                    self._report(
                        f"{child.spec.name} (pid {child.process.pid}) exited with code {code} after {uptime:.1f} s; "
                        f"restarting in {delay:g} s; log: {child.spec.log_path}"
                    )

    def run(self, stop_event: threading.Event, interval: float = 0.25) -> None:
        """Supervise until ``stop_event`` is set (the caller then calls ``stop``)."""
        while not stop_event.is_set():
            self.check()
            stop_event.wait(interval)

    def stop(self) -> None:
        """Stop every child at once: SIGTERM, then SIGKILL after the grace period. No restarts afterwards."""
        with self._lock:
            self._stopping = True
            stop_all([c.process for c in self._children.values()], self._stop_grace)

    def _launch(self, child: _Child) -> None:
        child.restart_at = None
        child.started_at = self._clock()
        try:
            child.process.start()
        except OSError as exc:
            # Treated like a crash at once: the next check() schedules the retry with backoff.
            self._report(f"could not start {child.spec.name}: {exc}")
