"""The load side shared by both pipelines: open-loop schedule, points, delivery bookkeeping, CPU per process."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import cpu
from bench.common.stats import percentile

# Every point of a run gets its own recorded_at, 100 µs after the previous one, starting two hours ago:
# strictly newer per shipment (so every point moves the parcel) and well inside tracking's accepted window.
STEP_US = 100
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def latency_summary(seconds: list[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank, ``bench.common.stats``), to 0.1 ms; None for no values."""
    ordered = sorted(seconds)

    def ms(share: float) -> float | None:
        return round(percentile(ordered, share) * 1000, 1) if ordered else None

    return {"p50_ms": ms(0.50), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": ms(1.0)}


class Clock:
    """Hands out recorded_at values: strictly increasing across the whole run."""

    def __init__(self) -> None:
        self._base_us = int((datetime.now(UTC) - timedelta(hours=2) - EPOCH).total_seconds()) * 1_000_000
        self._seq = 0

    def next_us(self) -> int:
        self._seq += 1
        return self._base_us + self._seq * STEP_US


def iso(micros: int) -> str:
    """An ISO-8601 UTC timestamp from epoch microseconds."""
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def moment(micros: int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def micros_of(text: str) -> int:
    """Epoch microseconds of an ISO-8601 timestamp."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - EPOCH) // timedelta(microseconds=1)


@dataclass
class Deliveries:
    """Which points each watched shipment should show, and when each first did (latency from its schedule).

    A watcher's view holds every point up to the newest it was shown: a point counts as
    delivered once an update at least as new reaches the watcher.
    """

    expected: dict[str, collections.deque[tuple[int, float]]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    expected_count: int = 0

    def watch(self, shipment_id: str) -> None:
        self.expected.setdefault(shipment_id, collections.deque())

    def is_watched(self, shipment_id: str) -> bool:
        return shipment_id in self.expected

    def expect(self, shipment_id: str, micros: int, scheduled: float) -> None:
        queue = self.expected.get(shipment_id)
        if queue is not None:
            queue.append((micros, scheduled))
            self.expected_count += 1

    def seen(self, shipment_id: str, micros: int, at: float) -> None:
        queue = self.expected.get(shipment_id)
        while queue and queue[0][0] <= micros:
            _, scheduled = queue.popleft()
            self.latencies.append(at - scheduled)

    @property
    def outstanding(self) -> int:
        return sum(len(q) for q in self.expected.values())

    def reset(self) -> None:
        for queue in self.expected.values():
            queue.clear()
        self.latencies = []
        self.expected_count = 0


async def open_loop(
    batches: int, interval_s: float, send: Callable[[int, float], Awaitable[None]], *, max_in_flight: int
) -> float:
    """Start batch i at ``start + i * interval_s`` whether or not earlier ones finished; returns the worst lateness.

    Latency is measured from each batch's scheduled time, so a backed-up system
    shows up in the numbers instead of slowing the generator down (no coordinated omission).
    ``max_in_flight`` only bounds sockets and memory.
    """
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    in_flight = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()
    worst_lateness = 0.0

    async def one(index: int, scheduled: float) -> None:
        try:
            await send(index, scheduled)
        finally:
            in_flight.release()

    for index in range(batches):
        scheduled_loop = start + index * interval_s
        delay = scheduled_loop - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        worst_lateness = max(worst_lateness, loop.time() - scheduled_loop)
        # The schedule in the monotonic clock the watchers stamp receipts with.
        scheduled = time.monotonic() - (loop.time() - scheduled_loop)
        task = asyncio.create_task(one(index, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return worst_lateness


class CpuMeter:
    """Cores used by named processes between two readings; ``postgres`` counts with its live backends, every
    other process alone (``bench.common.cpu``, without the CPU of children already reaped)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        named = {name: pid for name, pid in pids.items() if pid is not None}
        self._meter = cpu.CpuMeter(
            {name: [pid] for name, pid in named.items()},
            # A postmaster forks a backend per connection: their time is the database's.
            alone=frozenset(pid for name, pid in named.items() if name != "postgres"),
            reaped=False,
        )
        self._start: dict[str, float] = {}
        self._started_at = 0.0
        self._ticks: tuple[int, int] | None = None
        self.steal_share: float | None = None  # of the machine's CPU time between start and stop

    def start(self) -> None:
        self._start = self._meter.snapshot()
        self._started_at = time.monotonic()
        self._ticks = cpu.machine_ticks()

    def stop(self) -> dict[str, float]:
        """Average cores used by each process since ``start`` (1.0 = one core busy all along)."""
        elapsed = max(1e-9, time.monotonic() - self._started_at)
        now = self._meter.snapshot()
        self.steal_share = cpu.steal_share(self._ticks, cpu.machine_ticks())
        return {name: round((now[name] - self._start.get(name, 0.0)) / elapsed, 2) for name in now}


def point_json(lat: float, lon: float, micros: int) -> dict[str, Any]:
    """One courier fix as tracking's API takes it."""
    return {"lat": lat, "lon": lon, "recorded_at": iso(micros), "speed": 9.5, "heading": 180.0, "accuracy": 8.0}


def saturated(result: dict[str, Any]) -> bool:
    """Past what a pipeline sustains: it fell behind the offered rate, lost points, or latency ran away."""
    p99 = result["latency"]["p99_ms"]
    throughput = result["throughput_pps"] or 0
    return bool(throughput < 0.8 * result["offered_pps"] or result["lost"] or (p99 is not None and p99 > 5000))
