"""The orders benchmark: sustained purchases/s, latency at 70 % of it, CPU per order, lost and duplicates.

Phases of a full run (each printed as it finishes, all written to
``bench/results/orders.json``):

1. the parts underneath alone: raw broker produce/consume, raw Postgres commits,
   localstripe's own PaymentIntent ceiling (concurrency 1 and 16);
2. mode (b): the shop paying through the payment stand-in (fixed latency): a
   rate ladder until a step is not sustained, one refining step, a run at 70 % of
   the sustained rate, a profile at the sustained rate, a run with 429s injected;
3. the hand-written baseline through the same stand-in: its own ladder, and a run
   at the shop's 70 % rate for a like-for-like latency and CPU comparison;
4. mode (a): the shop paying through localstripe (persistence off): ladder and 70 %.

``--tiny`` sends 20 orders at 5/s in mode (b) only: the smoke test's size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stripe
from tweetshop_contracts import topics
from tweetshop_devstack.infra import LocalStripe, free_port
from tweetshop_devstack.services import DEV_STRIPE_API_KEY

from bench.common import profiling
from bench.common.cpu import CpuMeter, machine_ticks, steal_share
from bench.common.gc_settings import collect_like_the_services
from bench.common.results import RESULTS_DIR, SummaryRow, machine_info, markdown_table, write_json
from bench.common.stack import BenchInfra, ServiceStack
from bench.common.watch import OrderTimes, TopicWatcher
from bench.orders import raw
from bench.orders.baseline import ORDERS, SHIPMENTS, BaselinePipeline
from bench.orders.load import DRAIN_S, P99_BOUND_S, HttpOrders, OrderTarget, StepResult, run_step

DEFAULT_LADDER = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1000, 1200, 1500)
GOAL_ORDERS_PER_S = 300
GOAL_P99_MS = 300
GOAL_RATIO = 0.5


def say(message: str) -> None:
    """Progress on stdout."""
    print(f"bench-orders | {message}", flush=True)


@dataclass
class Options:
    """What to run, and how big."""

    tiny: bool = False
    modes: tuple[str, ...] = ("b", "a")
    ladder: tuple[float, ...] = DEFAULT_LADDER
    step_s: float = 10.0
    settle_s: float = 60.0
    latency_ms: float = 100.0
    rate_429: float = 0.1
    baseline: bool = True
    raw: bool = True
    profile_s: float = 10.0
    durable_postgres: bool = True
    results_dir: Path = RESULTS_DIR
    inflight_probe: bool = True
    inflight_orders: int = 100
    inflight_rate: float = 50.0
    tiny_orders: int = 20
    tiny_rate: float = 5.0
    tiny_rate_429: float = 0.0  # share of the stand-in's answers that are 429s during the tiny step
    extra: dict[str, Any] = field(default_factory=dict)


def describe(step: StepResult) -> str:
    """One line per step."""
    ok, why = step.verdict()
    return (
        f"{step.label:<14} {step.target_rate:>7.1f}/s sent {step.generator.achieved_rate:>7.1f}/s  "
        f"paid {step.paid}/{step.placed}  p50/p95/p99→paid {step.to_paid.p50_ms:.0f}/{step.to_paid.p95_ms:.0f}/"
        f"{step.to_paid.p99_ms:.0f} ms  p99→shipped {step.to_shipped.p99_ms:.0f} ms  "
        f"drained {step.drained_within_s} s  "
        + (f"steal {step.steal_share:.0%}  " if step.steal_share is not None else "")
        + ("OK" if ok else "NOT sustained: " + why)
    )


async def _wait_idle(times: OrderTimes, placed: dict[str, float], timeout: float) -> bool:
    """Wait until every order placed so far is paid and shipped (or failed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(times.done(o) for o in list(placed)):
            return True
        await asyncio.sleep(0.2)
    return False


async def _idle_cores(meter: CpuMeter, seconds: float = 5.0) -> dict[str, float]:
    """CPU cores each group uses with no orders arriving (pollers, fetch loops): subtracted from per-order costs."""
    before = meter.snapshot()
    await asyncio.sleep(seconds)
    return {k: round(v / seconds, 4) for k, v in CpuMeter.delta(before, meter.snapshot()).items()}


def marginal_cpu_ms(step: dict[str, Any], idle: dict[str, float]) -> dict[str, float]:
    """CPU ms per order above what the same processes burn while idle during the step's window."""
    window = float(step.get("cpu_window_s") or 0.0)
    orders = max(1, int(step.get("placed") or 0))
    return {
        k: round(max(0.0, v - idle.get(k, 0.0) * window) * 1000 / orders, 2)
        for k, v in (step.get("cpu_s") or {}).items()
    }


def cpu_capacity(cpu_ms: dict[str, float], groups: Sequence[str], cores: int) -> float | None:
    """Orders/s ``cores`` could carry if nothing but these groups ran, from their CPU per order."""
    total = sum(cpu_ms.get(g, 0.0) for g in groups)
    return round(cores * 1000 / total, 1) if total > 0 else None


async def _first_order(target: OrderTarget, timeout: float = 90.0) -> str:
    """Place orders until one is accepted: checkout learns the product from catalog's topic a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        order_id, error = await target.place()
        if order_id is not None:
            return order_id
        if time.monotonic() > deadline:
            raise RuntimeError(f"no order accepted within {timeout:.0f} s; last answer: {error}")
        await asyncio.sleep(0.3)


async def _ladder(
    label: str,
    target: OrderTarget,
    placed: dict[str, float],
    times: OrderTimes,
    meter: CpuMeter,
    opts: Options,
    ladder: Sequence[float],
) -> tuple[list[StepResult], float | None, bool]:
    """Step the rate up until a step is not sustained; refine once between the last good and the first bad."""
    steps: list[StepResult] = []
    good: float | None = None
    bad: float | None = None
    for rate in ladder:
        step = await run_step(
            f"{label} {rate:g}/s",
            target,
            placed,
            times,
            meter,
            rate=rate,
            duration_s=opts.step_s,
            settle_s=opts.settle_s,
        )
        steps.append(step)
        say(describe(step))
        if step.verdict()[0]:
            good = rate
        else:
            bad = rate
            break
    idle = await _wait_idle(times, placed, opts.settle_s)
    if good is not None and bad is not None and idle:
        middle = round((good + bad) / 2 / 5) * 5
        if good < middle < bad:
            step = await run_step(
                f"{label} {middle:g}/s",
                target,
                placed,
                times,
                meter,
                rate=middle,
                duration_s=opts.step_s,
                settle_s=opts.settle_s,
            )
            steps.append(step)
            say(describe(step))
            if step.verdict()[0]:
                good = middle
            idle = await _wait_idle(times, placed, opts.settle_s)
    return steps, good, idle


def _totals(times: OrderTimes, placed: dict[str, float]) -> dict[str, int]:
    """Lost and duplicates over every order of a mode, counted at its very end."""
    orders = list(placed)
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


async def _intents_per_order_in_localstripe(base_url: str, orders: set[str]) -> dict[str, int]:
    """PaymentIntents localstripe holds per order of ours: more than one is a double charge."""
    client = stripe.StripeClient(
        DEV_STRIPE_API_KEY, base_addresses={"api": base_url}, http_client=stripe.HTTPXClient(timeout=120)
    )
    counts: dict[str, int] = {}
    page = await client.v1.payment_intents.list_async({"limit": 100})
    async for intent in page.auto_paging_iter():
        order_id = (intent.to_dict().get("metadata") or {}).get("order_id")
        if order_id in orders:
            counts[order_id] = counts.get(order_id, 0) + 1
    return counts


async def drive_shop(stack: ServiceStack, infra: BenchInfra, opts: Options, mode: str) -> dict[str, Any]:
    """Everything measured against one running copy of the shop."""
    assert stack.seeded is not None
    times = OrderTimes()
    watcher = TopicWatcher(
        infra.kafka_bootstrap,
        [stack.topic(topics.CHECKOUT_ORDERS), stack.topic(topics.TRACKING_SHIPMENTS)],
        times.on_record,
    )
    await watcher.start()
    placed: dict[str, float] = {}
    target = HttpOrders(stack.url("checkout"), stack.seeded, placed)
    services = stack.pids()
    infra_pids = infra.pids()
    stripe_pid = infra_pids.get("stripe-standin" if stack.stripe_kind == "standin" else "localstripe")
    meter = CpuMeter(
        {
            **{name: [pid] for name, pid in services.items()},
            "services": list(services.values()),
            "postgres": [infra_pids.get("postgres")],
            "broker": [infra_pids.get("broker")],
            "stripe": [stripe_pid],
            "generator": [os.getpid()],
        },
        alone=frozenset({os.getpid()}),
    )
    out: dict[str, Any] = {"mode": mode, "stripe": stack.stripe_kind, "stripe_url": stack.stripe_url}
    try:
        first = await _first_order(target)
        if not await _wait_idle(times, placed, 60):
            raise RuntimeError(f"the first order {first} was not paid and shipped within 60 s")
        warm_count = 10 if opts.tiny else 40
        warm = await run_step("warm-up", target, placed, times, meter, rate=10, duration_s=0, count=warm_count)
        say(describe(warm))
        if not opts.tiny:
            await _wait_idle(times, placed, opts.settle_s)
            out["idle_cores"] = await _idle_cores(meter)
            say(f"idle CPU (cores): {out['idle_cores']}")
        if opts.tiny:
            if opts.tiny_rate_429 > 0:
                infra.configure_standin(rate_429=opts.tiny_rate_429)
            try:
                step = await run_step(
                    "tiny",
                    target,
                    placed,
                    times,
                    meter,
                    rate=opts.tiny_rate,
                    duration_s=0,
                    count=opts.tiny_orders,
                    settle_s=opts.settle_s,
                )
            finally:
                if opts.tiny_rate_429 > 0:
                    infra.configure_standin(rate_429=0.0)
            say(describe(step))
            out["steps"] = [step.as_dict()]
        else:
            steps, sustained, idle = await _ladder(mode, target, placed, times, meter, opts, opts.ladder)
            out["steps"] = [s.as_dict() for s in steps]
            out["sustained_orders_per_s"] = sustained
            out["idle_after_ladder"] = idle
            rate70 = 0.7 * (sustained or opts.ladder[0])
            out["rate_at_70"] = rate70
            at70 = await run_step(
                f"{mode} at 70%",
                target,
                placed,
                times,
                meter,
                rate=rate70,
                duration_s=opts.step_s * 2,
                settle_s=opts.settle_s,
            )
            say(describe(at70))
            out["at_70"] = at70.as_dict()
            await _wait_idle(times, placed, opts.settle_s)
            if opts.profile_s > 0 and mode == "b":
                out["profile"] = await _profile_at(
                    stack, target, placed, times, meter, opts, sustained or opts.ladder[0]
                )
                await _wait_idle(times, placed, opts.settle_s)
            if mode == "b" and opts.inflight_probe:
                out["in_flight_probe"] = await _in_flight_probe(infra, target, placed, times, meter, opts)
                await _wait_idle(times, placed, opts.settle_s)
            if mode == "b" and opts.rate_429 > 0:
                limited_before = infra.standin_stats()["rate_limited"]
                infra.configure_standin(rate_429=opts.rate_429)
                try:
                    with_429 = await run_step(
                        f"{mode} 429s",
                        target,
                        placed,
                        times,
                        meter,
                        rate=rate70,
                        duration_s=opts.step_s,
                        settle_s=max(opts.settle_s, 120),
                    )
                finally:
                    infra.configure_standin(rate_429=0.0)
                limited = infra.standin_stats()["rate_limited"] - limited_before
                say(describe(with_429) + f"  ({opts.rate_429:.0%} of Stripe calls answered 429: {limited} answers)")
                out["with_429"] = {"rate_429": opts.rate_429, "answers_429": limited, **with_429.as_dict()}
                await _wait_idle(times, placed, opts.settle_s)
        await asyncio.sleep(1.0)
        out["totals"] = _totals(times, placed)
        if stack.stripe_kind == "standin":
            out["standin"] = infra.standin_stats()
            per_order = out["standin"]
            out["totals"]["orders_with_several_payment_intents"] = per_order["orders_with_several_intents"]
        else:
            counts = await _intents_per_order_in_localstripe(stack.stripe_url, set(placed))
            out["totals"]["orders_with_several_payment_intents"] = sum(1 for n in counts.values() if n > 1)
            out["totals"]["orders_without_payment_intent"] = len(set(placed) - set(counts))
        return out
    finally:
        await target.close()
        await watcher.stop()


async def _in_flight_probe(
    infra: BenchInfra,
    target: OrderTarget,
    placed: dict[str, float],
    times: OrderTimes,
    meter: CpuMeter,
    opts: Options,
) -> dict[str, Any]:
    """How many Stripe calls checkout keeps in flight: a slow stand-in (2 s a call) and a burst of orders.

    With ``n`` orders arriving within the latency, an unblocked checkout has up to ``n`` calls in flight.
    """
    latency_ms, count, rate = 2000.0, opts.inflight_orders, opts.inflight_rate
    infra.configure_standin(latency_ms=latency_ms, reset_peak=True)
    try:
        step = await run_step(
            f"in-flight {rate:g}/s",
            target,
            placed,
            times,
            meter,
            rate=rate,
            duration_s=0,
            count=count,
            settle_s=max(opts.settle_s, 120),
        )
        peak = infra.standin_stats()["peak_in_flight"]
    finally:
        infra.configure_standin(latency_ms=opts.latency_ms, reset_peak=True)
    possible = min(count, rate * latency_ms / 1000)
    say(describe(step) + f"  (stand-in at {latency_ms:g} ms: peak {peak} calls in flight, {possible:g} possible)")
    return {
        "latency_ms": latency_ms,
        "orders": count,
        "rate": rate,
        "peak_in_flight": peak,
        "possible_in_flight": possible,
        "step": step.as_dict(),
    }


async def _profile_at(
    stack: ServiceStack,
    target: OrderTarget,
    placed: dict[str, float],
    times: OrderTimes,
    meter: CpuMeter,
    opts: Options,
    rate: float,
) -> dict[str, Any]:
    """py-spy on checkout, catalog and tracking for ``profile_s`` while orders arrive at ``rate``."""
    pids = {name: pid for name, pid in stack.pids().items() if name in ("checkout", "catalog", "tracking")}
    step_task = asyncio.create_task(
        run_step(
            f"profile {rate:g}/s",
            target,
            placed,
            times,
            meter,
            rate=rate,
            duration_s=opts.profile_s + 4,
            settle_s=opts.settle_s,
        )
    )
    await asyncio.sleep(2.0)  # into steady load before sampling
    profiles = await asyncio.to_thread(profiling.record, pids, opts.results_dir, seconds=opts.profile_s)
    step = await step_task
    say(describe(step) + "  (profiled: py-spy slows the services a little)")
    text = profiling.render_text(profiles)
    (opts.results_dir / "profile-orders.txt").write_text(
        f"# py-spy, {opts.profile_s:g} s at {rate:g} orders/s (mode b)\n\n{text}\n"
    )
    return {"rate": rate, "step": step.as_dict(), "profiles": profiles}


async def drive_baseline(infra: BenchInfra, opts: Options, shop_rate70: float | None) -> dict[str, Any]:
    """The hand-written pipeline: its own ladder, then the shop's 70 % rate for a like-for-like comparison."""
    pipeline = BaselinePipeline(infra.admin_dsn, infra.kafka_bootstrap, infra.standin_url, infra.logs_dir)
    intake = await pipeline.start()
    times = OrderTimes()
    watcher = TopicWatcher(infra.kafka_bootstrap, [pipeline.topic(ORDERS), pipeline.topic(SHIPMENTS)], times.on_record)
    infra_pids = infra.pids()
    stages = pipeline.pids()
    meter = CpuMeter(
        {
            **{name: [pid] for name, pid in stages.items()},
            "services": list(stages.values()),
            "postgres": [infra_pids.get("postgres")],
            "broker": [infra_pids.get("broker")],
            "stripe": [infra_pids.get("stripe-standin")],
            "generator": [os.getpid()],
        },
        alone=frozenset({os.getpid()}),
    )
    out: dict[str, Any] = {
        "what": "hand-written aiokafka + asyncpg pipeline, same hops and commits, same stand-in",
        "cpu_note": (
            "'services' CPU = the three stage processes; the intake (order insert + produce) runs in the "
            "generator process with the topic watcher, counted under 'generator'"
        ),
    }
    try:
        await watcher.start()
        await _first_order(intake)
        if not await _wait_idle(times, intake.placed, 90):
            pipeline.check_running()
            raise RuntimeError("the baseline's first order did not complete within 90 s")
        warm = await run_step("bl warm-up", intake, intake.placed, times, meter, rate=10, duration_s=0, count=40)
        say(describe(warm))
        await _wait_idle(times, intake.placed, opts.settle_s)
        out["idle_cores"] = await _idle_cores(meter)
        say(f"baseline idle CPU (cores): {out['idle_cores']}")
        steps, sustained, _ = await _ladder("baseline", intake, intake.placed, times, meter, opts, opts.ladder)
        pipeline.check_running()
        out["steps"] = [s.as_dict() for s in steps]
        out["sustained_orders_per_s"] = sustained
        if shop_rate70:
            same = await run_step(
                "bl at shop70",
                intake,
                intake.placed,
                times,
                meter,
                rate=shop_rate70,
                duration_s=opts.step_s * 2,
                settle_s=opts.settle_s,
            )
            say(describe(same))
            out["at_shop_70"] = same.as_dict()
        out["totals"] = _totals(times, intake.placed)
        return out
    finally:
        await watcher.stop()
        await pipeline.stop()


async def drive_raw(infra: BenchInfra) -> dict[str, Any]:
    """The parts underneath, alone."""
    out: dict[str, Any] = {}
    say("raw broker produce/consume …")
    out["broker"] = await raw.broker_rate(infra.kafka_bootstrap)
    say(f"raw broker: {out['broker']}")
    out["hop_latency"] = await raw.hop_latency(infra.kafka_bootstrap)
    say(f"one broker hop, by consumer fetch_max_wait_ms: {out['hop_latency']}")
    out["postgres"] = await raw.postgres_commit_rate(infra.admin_dsn)
    say(f"raw postgres: {out['postgres']}")
    ceiling_stripe = LocalStripe(free_port(), infra.logs_dir / "ceiling", state_file=None)
    await asyncio.to_thread(ceiling_stripe.start)
    try:
        out["localstripe"] = await raw.localstripe_ceiling(ceiling_stripe.base_url)
    finally:
        await asyncio.to_thread(ceiling_stripe.stop)
    say(f"localstripe alone (persistence off): {out['localstripe']}")
    return out


def _run_shop(infra: BenchInfra, opts: Options, mode: str) -> dict[str, Any]:
    stripe_url = infra.standin_url if mode == "b" else infra.localstripe_url
    stack = ServiceStack(
        infra, label=f"mode{mode}", stripe_url=stripe_url, stripe_kind="standin" if mode == "b" else "localstripe"
    )
    say(f"mode ({mode}): starting the four services (Stripe: {stack.stripe_kind} at {stripe_url})")
    try:
        stack.start()
        say(f"mode ({mode}): ready; seeded product {stack.seeded.product_id if stack.seeded else '?'}")
        return asyncio.run(drive_shop(stack, infra, opts, mode))
    finally:
        stack.stop()


def _first_step_note(mode: dict[str, Any]) -> str:
    """Why no rate was sustained: the lowest step's verdict."""
    steps = [st for st in mode.get("steps", []) if not str(st.get("label", "")).startswith("warm")]
    if not steps:
        return "not measured"
    first = steps[0]
    return f"none: even {first['target_rate']:g}/s failed ({first['verdict']})"


def summary_rows(result: dict[str, Any]) -> list[SummaryRow]:
    """The summary table's rows for the orders benchmark."""
    rows: list[SummaryRow] = []
    modes = result.get("modes", {})
    base = result.get("baseline") or {}
    rawr = result.get("raw") or {}
    b = modes.get("b")
    if b is not None and "steps" in b and "sustained_orders_per_s" not in b:  # tiny
        step = b["steps"][-1]
        rows.append(SummaryRow("orders (tiny)", "orders paid+shipped", step["paid"], note=f"of {step['placed']}"))
        rows.append(SummaryRow("orders (tiny)", "lost + duplicates", step["lost"] + step["duplicate_paid"]))
        return rows
    label_b = f"orders, stand-in {result.get('config', {}).get('latency_ms', 100):g} ms"
    if b is not None:
        sustained = b.get("sustained_orders_per_s")
        base_sustained = base.get("sustained_orders_per_s")
        ratio = (sustained / base_sustained) if sustained and base_sustained else None
        rows.append(
            SummaryRow(
                label_b,
                "sustained orders/s",
                sustained,
                "/s",
                base_sustained,
                "hand-written",
                f">= {GOAL_ORDERS_PER_S}/s, ratio >= {GOAL_RATIO}",
                bool(sustained and sustained >= GOAL_ORDERS_PER_S and (ratio or 0) >= GOAL_RATIO),
                _first_step_note(b) if sustained is None else "",
            )
        )
        at70 = b.get("at_70") or {}
        same = base.get("at_shop_70") or {}
        paid = at70.get("to_order_paid") or {}
        base_paid = same.get("to_order_paid") or {}
        rate70 = b.get("rate_at_70")
        for pct in ("p50", "p95", "p99"):
            value = paid.get(f"{pct}_ms")
            rows.append(
                SummaryRow(
                    label_b,
                    f"{pct} POST→OrderPaid at {rate70:.0f}/s (70%)" if rate70 else f"{pct} POST→OrderPaid",
                    value,
                    "ms",
                    base_paid.get(f"{pct}_ms"),
                    "hand-written, same rate",
                    f"< {GOAL_P99_MS} ms" if pct == "p99" else "",
                    (value is not None and value < GOAL_P99_MS) if pct == "p99" else None,
                )
            )
        shipped = at70.get("to_shipment_created") or {}
        rows.append(
            SummaryRow(
                label_b,
                "p99 POST→ShipmentCreated at 70%",
                shipped.get("p99_ms"),
                "ms",
                (same.get("to_shipment_created") or {}).get("p99_ms"),
                "hand-written, same rate",
            )
        )
        ours_cpu = marginal_cpu_ms(at70, b.get("idle_cores") or {}) if at70 else {}
        base_cpu = marginal_cpu_ms(same, base.get("idle_cores") or {}) if same else {}
        for name, base_label in (
            ("services", "3 stages"),
            ("postgres", "hand-written"),
            ("broker", "hand-written"),
            ("generator", "intake + watcher"),
        ):
            rows.append(
                SummaryRow(
                    label_b,
                    f"CPU per order above idle ({name})",
                    ours_cpu.get(name),
                    "ms",
                    base_cpu.get(name),
                    base_label,
                )
            )
        cores = int((result.get("machine") or {}).get("cpus") or 2)
        system = ("services", "postgres", "broker", "stripe")
        rows.append(
            SummaryRow(
                label_b,
                f"orders/s {cores} idle cores could carry (from CPU per order, without the generator)",
                cpu_capacity(ours_cpu, system, cores),
                "/s",
                cpu_capacity(base_cpu, (*system, "generator"), cores),
                "hand-written incl. its intake",
                f">= {GOAL_ORDERS_PER_S}/s",
            )
        )
        totals = b.get("totals") or {}
        bad = sum(
            totals.get(k, 0)
            for k in ("lost", "duplicate_paid", "duplicate_shipped", "orders_with_several_payment_intents")
        )
        rows.append(
            SummaryRow(
                label_b,
                "lost + duplicates (every order of the mode)",
                bad,
                "",
                goal="0",
                met=bad == 0,
                note=f"{totals.get('orders', 0)} orders",
            )
        )
        probe = b.get("in_flight_probe")
        if probe:
            rows.append(
                SummaryRow(
                    label_b,
                    f"peak Stripe calls in flight ({probe['orders']} orders at {probe['rate']:g}/s, "
                    f"stand-in at {probe['latency_ms']:g} ms)",
                    probe["peak_in_flight"],
                    goal=f"{probe['possible_in_flight']:g} possible",
                    met=probe["peak_in_flight"] >= 0.9 * probe["possible_in_flight"],
                )
            )
        w = b.get("with_429")
        if w:
            rows.append(
                SummaryRow(
                    label_b,
                    f"with {w['rate_429']:.0%} of calls 429 ({w.get('answers_429', '?')} answers): lost+dup / p99→paid",
                    f"{w['lost'] + w['duplicate_paid'] + w['duplicate_shipped']} / {w['to_order_paid']['p99_ms']} ms",
                    note=f"{w['placed']} orders at {w['target_rate']:.0f}/s",
                )
            )
    a = modes.get("a")
    if a is not None:
        ceiling = (rawr.get("localstripe") or {}).get("concurrency_16_per_s")
        rows.append(
            SummaryRow(
                "orders, localstripe",
                "sustained orders/s",
                a.get("sustained_orders_per_s"),
                "/s",
                ceiling,
                "localstripe alone, c=16",
                note=_first_step_note(a) if a.get("sustained_orders_per_s") is None else "",
            )
        )
        at70 = a.get("at_70") or {}
        rows.append(
            SummaryRow(
                "orders, localstripe",
                "p99 POST→OrderPaid at 70%",
                (at70.get("to_order_paid") or {}).get("p99_ms"),
                "ms",
            )
        )
        totals = a.get("totals") or {}
        bad = sum(
            totals.get(k, 0)
            for k in ("lost", "duplicate_paid", "duplicate_shipped", "orders_with_several_payment_intents")
        )
        rows.append(SummaryRow("orders, localstripe", "lost + duplicates", bad, goal="0", met=bad == 0))
    if rawr.get("broker"):
        rows.append(SummaryRow("raw", "broker produce (aiokafka)", rawr["broker"]["produce_per_s"], "msg/s"))
        rows.append(SummaryRow("raw", "broker consume (aiokafka)", rawr["broker"]["consume_per_s"], "msg/s"))
    for key, hop in (rawr.get("hop_latency") or {}).items():
        rows.append(SummaryRow("raw", f"one broker hop p50, consumer {key}", hop["p50_ms"], "ms"))
    if rawr.get("postgres"):
        pg = rawr["postgres"]
        metric = f"Postgres commits (c={pg['concurrency']}, fsync {pg['fsync']})"
        rows.append(SummaryRow("raw", metric, pg["commits_per_s"], "/s"))
    if rawr.get("localstripe"):
        ls = rawr["localstripe"]
        rows.append(SummaryRow("raw", "localstripe PaymentIntents c=1", ls.get("concurrency_1_per_s"), "/s"))
        rows.append(SummaryRow("raw", "localstripe PaymentIntents c=16", ls.get("concurrency_16_per_s"), "/s"))
    return rows


def run(opts: Options, infra: BenchInfra | None = None) -> dict[str, Any]:
    """Run the orders benchmark (starting its own infrastructure unless given) and write its results."""
    collect_like_the_services()  # the generator (and the baseline's intake) collect garbage as the services do
    own_infra = infra is None
    if infra is None:
        infra = BenchInfra(
            localstripe="a" in opts.modes and not opts.tiny,
            standin=True,
            standin_latency_ms=opts.latency_ms,
            durable_postgres=opts.durable_postgres,
        )
    result: dict[str, Any] = {
        "benchmark": "orders",
        "machine": machine_info(),
        "config": {
            "tiny": opts.tiny,
            "modes": list(opts.modes),
            "ladder": list(opts.ladder),
            "step_s": opts.step_s,
            "latency_ms": opts.latency_ms,
            "rate_429": opts.rate_429,
            "postgres_durable": infra.durable_postgres,
            "sustained_means": (
                f"every order accepted, paid once and shipped once, none failed; p99 POST→OrderPaid < "
                f"{P99_BOUND_S * 1000:.0f} ms; all paid and shipped within {DRAIN_S:.0f} s after the last POST; "
                "the generator sent >= 95% of the target rate"
            ),
            "stand_in": "payment stand-in (bench/common/stripe_standin.py): fixed latency, not Stripe",
        },
        "modes": {},
    }
    ticks_at_start = machine_ticks()
    try:
        if own_infra:
            say(f"starting broker, Postgres (durable={opts.durable_postgres}), Stripe stand-ins in {infra.run_dir}")
            infra.start()
        if opts.raw and not opts.tiny:
            result["raw"] = asyncio.run(drive_raw(infra))
        modes = ("b",) if opts.tiny else opts.modes
        if "b" in modes:
            result["modes"]["b"] = _run_shop(infra, opts, "b")
        if opts.baseline and not opts.tiny:
            rate70 = result["modes"].get("b", {}).get("rate_at_70")
            say("baseline: starting the hand-written pipeline")
            result["baseline"] = asyncio.run(drive_baseline(infra, opts, rate70))
        if "a" in modes:
            result["modes"]["a"] = _run_shop(infra, opts, "a")
    finally:
        result["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        result["machine"]["steal_share"] = steal_share(ticks_at_start, machine_ticks())
        if own_infra:
            infra.stop()
    rows = summary_rows(result)
    result["summary_rows"] = [r.as_dict() for r in rows]
    name = "orders-tiny" if opts.tiny else "orders"
    path = write_json(name, result, opts.results_dir)
    print(markdown_table(result["summary_rows"]), flush=True)
    say(f"results in {path}")
    return result


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command line → Options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="20 orders at 5/s, mode (b) only (the smoke test)")
    parser.add_argument("--modes", default="b,a", help="b = payment stand-in, a = localstripe (default: b,a)")
    parser.add_argument("--ladder", default=",".join(str(r) for r in DEFAULT_LADDER), help="rates to step through")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--settle-seconds", type=float, default=60.0, help="how long late orders are waited for")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the stand-in's fixed latency")
    parser.add_argument("--rate-429", type=float, default=0.1, help="share of stand-in calls answered 429 (0: skip)")
    parser.add_argument("--no-inflight-probe", action="store_true", help="skip the Stripe-calls-in-flight probe")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-raw", action="store_true")
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="0: no profile")
    parser.add_argument("--fast-postgres", action="store_true", help="fsync off (the test fixtures' setting)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    return Options(
        tiny=args.tiny,
        modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        ladder=tuple(float(r) for r in args.ladder.split(",") if r.strip()),
        step_s=args.step_seconds,
        settle_s=args.settle_seconds,
        latency_ms=args.latency_ms,
        rate_429=args.rate_429,
        baseline=not args.no_baseline,
        inflight_probe=not args.no_inflight_probe,
        raw=not args.no_raw,
        profile_s=args.profile_seconds,
        durable_postgres=not args.fast_postgres,
        results_dir=args.results_dir,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m bench.orders`."""
    opts = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run(opts)
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
