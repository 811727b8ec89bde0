"""One pipeline under load (the shop or the baseline): its steps, its rate ladder, its waits and its counts."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from bench.common.cpu import CpuMeter
from bench.common.statements import StatementMeter
from bench.common.watch import OrderTimes
from bench.orders.load import OrderTarget, StepResult, run_step
from bench.orders.options import Options

WARM_UP_SETTLE_S = 60.0  # run_step's own default: the warm-up never took the --settle-seconds option


def say(message: str) -> None:
    """Progress on stdout."""
    print(f"bench-orders | {message}", flush=True)


def describe(step: StepResult) -> str:
    """One line per step."""
    ok, why = step.verdict()
    return (
        f"{step.label:<14} {step.target_rate:>7.1f}/s sent {step.generator.achieved_rate:>7.1f}/s  "
        f"paid {step.paid}/{step.placed}  p50/p95/p99→paid {step.to_paid.p50_ms:.0f}/{step.to_paid.p95_ms:.0f}/"
        f"{step.to_paid.p99_ms:.0f} ms  p99→shipped {step.to_shipped.p99_ms:.0f} ms  "
        f"drained {step.drained_within_s} s  "
        + (f"steal {step.steal_share:.0%}  " if step.steal_share is not None else "")
        + (
            f"SQL/order {step.statements_per_order['statements']:g}  "
            f"WAL/order {step.statements_per_order.get('wal_bytes', 0) / 1024:.1f} KiB  "
            if step.statements_per_order
            else ""
        )
        + ("OK" if ok else "NOT sustained: " + why)
    )


def pipeline_meter(
    processes: dict[str, int | None], infra_pids: dict[str, int | None], stripe_pid: int | None
) -> CpuMeter:
    """CPU per process of the pipeline, all of them together ("services"), the parts underneath and the generator."""
    return CpuMeter(
        {
            **{name: [pid] for name, pid in processes.items()},
            "services": list(processes.values()),
            "postgres": [infra_pids.get("postgres")],
            "broker": [infra_pids.get("broker")],
            "stripe": [stripe_pid],
            "generator": [os.getpid()],
        },
        alone=frozenset({os.getpid()}),
    )


@dataclass
class Driver:
    """Where orders go, the orders placed so far, when each was paid and shipped, and the CPU meter: every step
    of one pipeline goes through them."""

    target: OrderTarget
    placed: dict[str, float]
    times: OrderTimes
    meter: CpuMeter
    opts: Options
    statements: StatementMeter | None = None  # the shop's SQL statements per order, where Postgres counts them

    async def step(
        self, label: str, rate: float, *, duration_s: float, count: int | None = None, settle_s: float | None = None
    ) -> StepResult:
        """One step: ``rate`` orders/s for ``duration_s`` (or ``count`` orders), waited for ``settle_s``
        (the options' by default)."""
        return await run_step(
            label,
            self.target,
            self.placed,
            self.times,
            self.meter,
            rate=rate,
            duration_s=duration_s,
            settle_s=self.opts.settle_s if settle_s is None else settle_s,
            count=count,
            statements=self.statements,
        )

    async def warm_up(self, label: str, count: int) -> StepResult:
        """``count`` orders at 10/s before anything is measured."""
        step = await self.step(label, 10, duration_s=0, count=count, settle_s=WARM_UP_SETTLE_S)
        say(describe(step))
        return step

    async def long_step(self, label: str, rate: float) -> StepResult:
        """A step twice as long as the ladder's at ``rate``: the runs at 70 % that latency and CPU are read from."""
        step = await self.step(label, rate, duration_s=self.opts.step_s * 2)
        say(describe(step))
        return step

    async def ladder(self, label: str) -> tuple[list[StepResult], float | None, bool]:
        """Step the rate up until a step is not sustained; refine once between the last good and the first bad."""
        steps: list[StepResult] = []
        good: float | None = None
        bad: float | None = None

        async def step_at(rate: float) -> StepResult:
            step = await self.step(f"{label} {rate:g}/s", rate, duration_s=self.opts.step_s)
            steps.append(step)
            say(describe(step))
            return step

        for rate in self.opts.ladder:
            step = await step_at(rate)
            if step.verdict()[0]:
                good = rate
            else:
                bad = rate
                break
        idle = await self.wait_idle()
        if good is not None and bad is not None and idle:
            middle = round((good + bad) / 2 / 5) * 5
            if good < middle < bad:
                step = await step_at(middle)
                if step.verdict()[0]:
                    good = middle
                idle = await self.wait_idle()
        return steps, good, idle

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every order placed so far is paid and shipped (or failed); ``timeout`` is the options'
        settle time by default."""
        deadline = time.monotonic() + (self.opts.settle_s if timeout is None else timeout)
        while time.monotonic() < deadline:
            if all(self.times.done(o) for o in list(self.placed)):
                return True
            await asyncio.sleep(0.2)
        return False

    async def idle_cores(self, seconds: float = 5.0) -> dict[str, float]:
        """CPU cores each group uses with no orders arriving (pollers, fetch loops): subtracted from per-order
        costs."""
        before = self.meter.snapshot()
        await asyncio.sleep(seconds)
        return {k: round(v / seconds, 4) for k, v in CpuMeter.delta(before, self.meter.snapshot()).items()}

    async def first_order(self, timeout: float = 90.0) -> str:
        """Place orders until one is accepted: checkout learns the product from catalog's topic a moment later."""
        deadline = time.monotonic() + timeout
        while True:
            order_id, error = await self.target.place()
            if order_id is not None:
                return order_id
            if time.monotonic() > deadline:
                raise RuntimeError(f"no order accepted within {timeout:.0f} s; last answer: {error}")
            await asyncio.sleep(0.3)

    def totals(self) -> dict[str, Any]:
        """Lost and duplicates over every order of a mode, counted at its very end."""
        times, orders = self.times, list(self.placed)
        return {
            "orders": len(orders),
            "paid_once": sum(1 for o in orders if len(times.paid.get(o, ())) == 1),
            "shipped_once": sum(1 for o in orders if len(times.shipped.get(o, ())) == 1),
            "failed": sum(1 for o in orders if o in times.failed),
            "lost": sum(1 for o in orders if (o not in times.paid or o not in times.shipped) and o not in times.failed),
            "duplicate_paid": sum(1 for o in orders if len(times.paid.get(o, ())) > 1),
            "duplicate_shipped": sum(1 for o in orders if len(times.shipped.get(o, ())) > 1),
            "orders_with_several_intents_on_topic": sum(1 for o in orders if len(times.intents.get(o, ())) > 1),
        }
