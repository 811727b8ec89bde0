"""CPU time of groups of processes (a service, Postgres with its backends), read with psutil."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import psutil


def cpu_seconds(pid: int, *, descendants: bool = True, reaped: bool = True) -> float:
    """User + system CPU seconds of ``pid``, with its live descendants and (``reaped``) the children it has
    already reaped, unless told not to."""
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        if not descendants:
            return float(times.user + times.system)
        # Postgres backends are children of the postmaster: the reaped ones are in children_*, the live ones below.
        total = times.user + times.system
        if reaped:
            total += times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return float(total)
    except psutil.Error:
        return 0.0


class CpuMeter:
    """Snapshots of CPU seconds per named group of pids; the difference of two is the CPU a phase used."""

    def __init__(
        self, groups: Mapping[str, list[int | None]], *, alone: frozenset[int] = frozenset(), reaped: bool = True
    ) -> None:
        self.groups = {name: [p for p in pids if p is not None] for name, pids in groups.items()}
        # Pids counted without their descendants: the benchmark process itself is the parent of everything.
        self.alone = alone
        self.reaped = reaped  # count the CPU of children already reaped (Postgres backends that have exited)

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far, per group."""
        return {
            name: sum(cpu_seconds(pid, descendants=pid not in self.alone, reaped=self.reaped) for pid in pids)
            for name, pids in self.groups.items()
        }

    @staticmethod
    def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        """CPU seconds used between two snapshots, per group."""
        return {name: round(after.get(name, 0.0) - before.get(name, 0.0), 3) for name in after}


def machine_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks of the whole machine so far, from /proc/stat; None where there is none.

    Steal is time the hypervisor gave this virtual machine's CPUs to someone else: on a shared host it is
    CPU the benchmark could not have, whatever its processes did.
    """
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
    ticks = [int(x) for x in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's CPU time stolen by the hypervisor between two ``machine_ticks``."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)
