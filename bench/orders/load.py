"""Open-loop load: orders sent at a fixed arrival rate, scheduled by the clock, never by completions.

A step sends ``rate × duration`` orders, each due at ``start + i / rate``; a late
generator sends what is due at once (and reports how late it was), so a slow
system cannot slow the arrivals down as a closed loop would. Each order's time
runs from just before its placement to the moment its ``OrderPaid`` and its
``ShipmentCreated`` reach our own consumer of the topics.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from tweetshop_devstack.seed import order_body

from bench.common.cpu import CpuMeter, machine_ticks, steal_share
from bench.common.stack import CLIENT_KEEPALIVE_S, SERVICE_NAMES, Seeded
from bench.common.statements import StatementMeter, per_order
from bench.common.stats import Latency, percentile
from bench.common.watch import OrderTimes

# What "p99 stays bounded" means here: p99 from POST to OrderPaid under this, and every order paid and
# shipped within DRAIN_S after the last one was sent.
P99_BOUND_S = 1.0
DRAIN_S = 5.0
# The generator must send at least this share of the target rate, or the step measured the generator.
GENERATOR_MIN_SHARE = 0.95


class OrderTarget(Protocol):
    """Something that takes orders: checkout's HTTP API, or the hand-written baseline's intake."""

    async def place(self) -> tuple[str | None, str | None]:
        """Place one order; (order id, None) or (None, what went wrong)."""
        ...


@dataclass
class OpenLoopStats:
    """How well the generator kept to its schedule."""

    target_rate: float
    sent: int
    achieved_rate: float
    lag_p99_ms: float
    lag_max_ms: float
    send_started: float
    send_ended: float


async def open_loop(rate: float, count: int, submit: Callable[[], Coroutine[Any, Any, None]]) -> OpenLoopStats:
    """Start ``submit()`` ``count`` times at ``rate`` per second by the clock; wait for all of them."""
    tasks: set[asyncio.Task[None]] = set()
    lags: list[float] = []
    start = time.monotonic() + 0.05
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, time.monotonic() - due))
        task = asyncio.create_task(submit())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    ended = time.monotonic()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    span = max(ended - start, 1e-9)
    ordered = sorted(lags)
    return OpenLoopStats(
        target_rate=rate,
        sent=count,
        # n arrivals span n-1 intervals; the rate they were sent at.
        achieved_rate=round((count - 1) / span, 1) if count > 1 else rate,
        lag_p99_ms=round(percentile(ordered, 0.99) * 1000, 1),
        lag_max_ms=round(ordered[-1] * 1000, 1) if ordered else 0.0,
        send_started=start,
        send_ended=ended,
    )


class HttpOrders:
    """``POST /orders`` to checkout, one fresh Idempotency-Key and ``pm_card_visa`` per order."""

    def __init__(self, checkout_url: str, seeded: Seeded, placed: dict[str, float], *, max_connections: int = 2000):
        # aiohttp, not httpx: the generator shares the two cores with what it measures, and per request httpx
        # costs it several times the CPU. The session is made on first use, in the running loop.
        self._url = checkout_url.rstrip("/") + "/orders"
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._placed = placed
        self._body = order_body(seeded.tweet_id, seeded.product_id, buyer_id="bench-buyer", email="bench@example.com")

    async def place(self) -> tuple[str | None, str | None]:
        """One purchase; the order id is timed from just before the request."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Below uvicorn's 5 s keep-alive (CLIENT_KEEPALIVE_S).
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=CLIENT_KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=60.0),
            )
        started = time.monotonic()
        try:
            async with self._session.post(
                self._url, json=self._body, headers={"Idempotency-Key": f"bench-{uuid.uuid4().hex}"}
            ) as response:
                if response.status != 202:
                    return None, f"HTTP {response.status}: {(await response.text())[:120]}"
                order_id = str((await response.json())["id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            return None, type(exc).__name__
        self._placed[order_id] = started
        return order_id, None

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()


@dataclass
class StepResult:
    """One rate step: what was sent, what arrived, how fast, at what CPU cost."""

    label: str
    target_rate: float
    duration_s: float
    generator: OpenLoopStats
    placed: int
    errors: dict[str, int]
    paid: int
    shipped: int
    failed: int
    duplicate_paid: int
    duplicate_shipped: int
    several_intents: int
    missing_paid: int
    missing_shipped: int
    drained_within_s: float | None
    to_paid: Latency
    to_shipped: Latency
    cpu_s: dict[str, float]
    cpu_ms_per_order: dict[str, float]
    cpu_window_s: float
    steal_share: float | None = None
    statements_per_order: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        """Orders placed but never paid and shipped (nor failed) by the end of the wait."""
        return max(self.missing_paid, self.missing_shipped)

    @property
    def duplicates(self) -> int:
        """Orders paid or shipped more than once, or charged by several PaymentIntents."""
        return self.duplicate_paid + self.duplicate_shipped + self.several_intents

    def verdict(self) -> tuple[bool, str]:
        """Whether the step was sustained, and if not, why."""
        reasons: list[str] = []
        if self.generator.achieved_rate < GENERATOR_MIN_SHARE * self.target_rate:
            reasons.append(f"generator-limited ({self.generator.achieved_rate:.0f}/s sent)")
        if self.errors:
            reasons.append(f"{sum(self.errors.values())} placements failed")
        if self.lost:
            reasons.append(f"{self.lost} not paid+shipped")
        if self.failed:
            reasons.append(f"{self.failed} failed/cancelled")
        if self.duplicates:
            reasons.append(f"{self.duplicates} duplicates")
        if not (self.to_paid.p99_ms < P99_BOUND_S * 1000):
            reasons.append(f"p99 to OrderPaid {self.to_paid.p99_ms:.0f} ms >= {P99_BOUND_S * 1000:.0f} ms")
        if self.drained_within_s is None or self.drained_within_s > DRAIN_S:
            reasons.append(f"backlog not drained within {DRAIN_S:.0f} s")
        return (not reasons, "; ".join(reasons) or "sustained")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        ok, why = self.verdict()
        return {
            "label": self.label,
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "achieved_rate": self.generator.achieved_rate,
            "generator_lag_p99_ms": self.generator.lag_p99_ms,
            "generator_lag_max_ms": self.generator.lag_max_ms,
            "placed": self.placed,
            "errors": self.errors,
            "paid": self.paid,
            "shipped": self.shipped,
            "failed": self.failed,
            "lost": self.lost,
            "duplicate_paid": self.duplicate_paid,
            "duplicate_shipped": self.duplicate_shipped,
            "orders_with_several_intents": self.several_intents,
            "drained_within_s": self.drained_within_s,
            "to_order_paid": self.to_paid.as_dict(),
            "to_shipment_created": self.to_shipped.as_dict(),
            "cpu_s": self.cpu_s,
            "cpu_window_s": self.cpu_window_s,
            "cpu_ms_per_order": self.cpu_ms_per_order,
            "statements_per_order": self.statements_per_order,
            "steal_share": self.steal_share,
            "sustained": ok,
            "verdict": why,
            **self.extra,
        }


async def run_step(
    label: str,
    target: OrderTarget,
    placed: Mapping[str, float],
    times: OrderTimes,
    meter: CpuMeter,
    *,
    rate: float,
    duration_s: float,
    settle_s: float = 60.0,
    count: int | None = None,
    statements: StatementMeter | None = None,
) -> StepResult:
    """Send ``rate`` orders/s for ``duration_s`` (or ``count`` orders), wait for them to be paid and shipped;
    with ``statements``, count the services' SQL statements too."""
    n = count if count is not None else max(1, round(rate * duration_s))
    errors: Counter[str] = Counter()
    mine: list[str] = []

    async def submit() -> None:
        order_id, error = await target.place()
        if order_id is None:
            errors[(error or "error").split(":")[0]] += 1
        else:
            mine.append(order_id)

    statements_before = await statements.snapshot() if statements is not None else None
    cpu_before = meter.snapshot()
    ticks_before = machine_ticks()
    window_started = time.monotonic()
    generator = await open_loop(rate, n, submit)
    # Every POST has been answered here; wait until each order is paid and shipped (or time runs out).
    deadline = generator.send_ended + max(settle_s, DRAIN_S)
    drained_at: float | None = None
    while True:
        if all(times.done(o) for o in mine):
            drained_at = time.monotonic()
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    # A moment more to catch late duplicates.
    await asyncio.sleep(0.5)
    cpu_used = CpuMeter.delta(cpu_before, meter.snapshot())
    stolen = steal_share(ticks_before, machine_ticks())
    statements_after = await statements.snapshot() if statements is not None else None
    window_s = time.monotonic() - window_started
    to_paid = [times.paid[o][0] - placed[o] for o in mine if o in times.paid]
    to_shipped = [times.shipped[o][0] - placed[o] for o in mine if o in times.shipped]
    completed = max(1, len(mine))
    return StepResult(
        label=label,
        target_rate=rate,
        duration_s=round(n / rate, 2),
        generator=generator,
        placed=len(mine),
        errors=dict(errors),
        paid=sum(1 for o in mine if o in times.paid),
        shipped=sum(1 for o in mine if o in times.shipped),
        failed=sum(1 for o in mine if o in times.failed),
        duplicate_paid=sum(1 for o in mine if len(times.paid.get(o, ())) > 1),
        duplicate_shipped=sum(1 for o in mine if len(times.shipped.get(o, ())) > 1),
        several_intents=sum(1 for o in mine if len(times.intents.get(o, ())) > 1),
        missing_paid=sum(1 for o in mine if o not in times.paid and o not in times.failed),
        missing_shipped=sum(1 for o in mine if o not in times.shipped and o not in times.failed),
        drained_within_s=None if drained_at is None else round(drained_at - generator.send_ended, 2),
        to_paid=Latency.of_seconds(to_paid),
        to_shipped=Latency.of_seconds(to_shipped),
        cpu_s=cpu_used,
        cpu_window_s=round(window_s, 2),
        steal_share=stolen,
        cpu_ms_per_order={k: round(v * 1000 / completed, 3) for k, v in cpu_used.items()},
        statements_per_order=per_order(statements_before, statements_after, completed, SERVICE_NAMES),
    )
