"""The phases of the orders benchmark: each drives one pipeline (the shop, the baseline, the raw parts) and
returns what it measured."""

from __future__ import annotations

import asyncio
from typing import Any

import stripe
from tweetshop_contracts import topics
from tweetshop_devstack.infra import LocalStripe, free_port
from tweetshop_devstack.services import DEV_STRIPE_API_KEY

from bench.common import loop, profiling
from bench.common.stack import BenchInfra, ServiceStack
from bench.common.statements import StatementMeter
from bench.common.watch import OrderTimes, TopicWatcher
from bench.orders import raw
from bench.orders.baseline import ORDERS, SHIPMENTS, BaselinePipeline
from bench.orders.driver import Driver, describe, pipeline_meter, say
from bench.orders.load import HttpOrders
from bench.orders.options import Options
from bench.orders.returning import returning_buyers


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
    infra_pids = infra.pids()
    stripe_pid = infra_pids.get("stripe-standin" if stack.stripe_kind == "standin" else "localstripe")
    run = Driver(
        target,
        placed,
        times,
        pipeline_meter(stack.pids(), infra_pids, stripe_pid),
        opts,
        StatementMeter(infra.admin_dsn, stack.database),
    )
    out: dict[str, Any] = {"mode": mode, "stripe": stack.stripe_kind, "stripe_url": stack.stripe_url}
    try:
        first = await run.first_order()
        if not await run.wait_idle(60):
            raise RuntimeError(f"the first order {first} was not paid and shipped within 60 s")
        await run.warm_up("warm-up", 10 if opts.tiny else 40)
        if not opts.tiny:
            await run.wait_idle()
            out["idle_cores"] = await run.idle_cores()
            say(f"idle CPU (cores): {out['idle_cores']}")
        buyers = opts.tiny_returning_buyers if opts.tiny else opts.returning_buyers
        if stack.stripe_kind == "standin" and buyers > 0:
            out["returning_buyer"] = await _returning_buyer(stack, times, buyers)
            if not opts.tiny:
                await run.wait_idle()
        if opts.tiny:
            if opts.tiny_rate_429 > 0:
                infra.configure_standin(rate_429=opts.tiny_rate_429)
            try:
                step = await run.step("tiny", opts.tiny_rate, duration_s=0, count=opts.tiny_orders)
            finally:
                if opts.tiny_rate_429 > 0:
                    infra.configure_standin(rate_429=0.0)
            say(describe(step))
            out["steps"] = [step.as_dict()]
        else:
            steps, sustained, idle = await run.ladder(mode)
            out["steps"] = [s.as_dict() for s in steps]
            out["sustained_orders_per_s"] = sustained
            out["idle_after_ladder"] = idle
            rate70 = 0.7 * (sustained or opts.ladder[0])
            out["rate_at_70"] = rate70
            at70 = await run.long_step(f"{mode} at 70%", rate70)
            out["at_70"] = at70.as_dict()
            await run.wait_idle()
            if opts.profile_s > 0 and mode == "b":
                out["profile"] = await _profile_at(stack, run, sustained or opts.ladder[0])
                await run.wait_idle()
            if mode == "b" and opts.inflight_probe:
                out["in_flight_probe"] = await _in_flight_probe(infra, run)
                await run.wait_idle()
            if mode == "b" and opts.rate_429 > 0:
                limited_before = infra.standin_stats()["rate_limited"]
                infra.configure_standin(rate_429=opts.rate_429)
                try:
                    with_429 = await run.step(
                        f"{mode} 429s", rate70, duration_s=opts.step_s, settle_s=max(opts.settle_s, 120)
                    )
                finally:
                    infra.configure_standin(rate_429=0.0)
                limited = infra.standin_stats()["rate_limited"] - limited_before
                say(describe(with_429) + f"  ({opts.rate_429:.0%} of Stripe calls answered 429: {limited} answers)")
                out["with_429"] = {"rate_429": opts.rate_429, "answers_429": limited, **with_429.as_dict()}
                await run.wait_idle()
        await asyncio.sleep(1.0)
        out["totals"] = run.totals()
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


async def _returning_buyer(stack: ServiceStack, times: OrderTimes, buyers: int) -> dict[str, Any]:
    """The first purchase (saving the card) and the returning one (with it), for ``buyers`` new buyers."""
    assert stack.seeded is not None
    measured = await returning_buyers(stack.url("checkout"), stack.seeded, times, buyers)
    out = measured.as_dict(times)
    first, again = out["first"]["to_order_paid"], out["returning"]["to_order_paid"]
    say(
        f"returning buyer ({buyers} buyers): p50/p99 POST→OrderPaid first {first['p50_ms']}/{first['p99_ms']} ms, "
        f"with the saved card {again['p50_ms']}/{again['p99_ms']} ms"
        + (f"  errors: {out['errors'][:3]}" if out["errors"] else "")
    )
    return out


async def _in_flight_probe(infra: BenchInfra, run: Driver) -> dict[str, Any]:
    """How many Stripe calls checkout keeps in flight: a slow stand-in (2 s a call) and a burst of orders.

    With ``n`` orders arriving within the latency, an unblocked checkout has up to ``n`` calls in flight.
    """
    opts = run.opts
    latency_ms, count, rate = 2000.0, opts.inflight_orders, opts.inflight_rate
    infra.configure_standin(latency_ms=latency_ms, reset_peak=True)
    try:
        step = await run.step(
            f"in-flight {rate:g}/s", rate, duration_s=0, count=count, settle_s=max(opts.settle_s, 120)
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


async def _profile_at(stack: ServiceStack, run: Driver, rate: float) -> dict[str, Any]:
    """py-spy on checkout, catalog and tracking for ``profile_s`` while orders arrive at ``rate``."""
    opts = run.opts
    pids = {name: pid for name, pid in stack.pids().items() if name in ("checkout", "catalog", "tracking")}
    step_task = asyncio.create_task(run.step(f"profile {rate:g}/s", rate, duration_s=opts.profile_s + 4))
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
    meter = pipeline_meter(pipeline.pids(), infra_pids, infra_pids.get("stripe-standin"))
    run = Driver(intake, intake.placed, times, meter, opts)
    out: dict[str, Any] = {
        "what": "hand-written aiokafka + asyncpg pipeline, same hops and commits, same stand-in",
        "cpu_note": (
            "'services' CPU = the three stage processes; the intake (order insert + produce) runs in the "
            "generator process with the topic watcher, counted under 'generator'"
        ),
    }
    try:
        await watcher.start()
        await run.first_order()
        if not await run.wait_idle(90):
            pipeline.check_running()
            raise RuntimeError("the baseline's first order did not complete within 90 s")
        await run.warm_up("bl warm-up", 40)
        await run.wait_idle()
        out["idle_cores"] = await run.idle_cores()
        say(f"baseline idle CPU (cores): {out['idle_cores']}")
        steps, sustained, _ = await run.ladder("baseline")
        pipeline.check_running()
        out["steps"] = [s.as_dict() for s in steps]
        out["sustained_orders_per_s"] = sustained
        if shop_rate70:
            same = await run.long_step("bl at shop70", shop_rate70)
            out["at_shop_70"] = same.as_dict()
        out["totals"] = run.totals()
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


def run_shop(infra: BenchInfra, opts: Options, mode: str) -> dict[str, Any]:
    stripe_url = infra.standin_url if mode == "b" else infra.localstripe_url
    # The tiny run's stand-in answers a third of its calls with a random 429: a streak of seven for one order
    # would, at the production backoff (up to 300 s), outlast the 60 s the run waits (about 1 run in 100 did).
    # Capped at 4 s, 60 s hold some fifteen retries of one order; the full run (2 % of 429s) keeps 300 s.
    extra_env = {"TWEETSHOP_PAYMENT_RETRY_MAX_BACKOFF_S": "4"} if opts.tiny else None
    stack = ServiceStack(
        infra,
        label=f"mode{mode}",
        stripe_url=stripe_url,
        stripe_kind="standin" if mode == "b" else "localstripe",
        extra_env=extra_env,
    )
    say(f"mode ({mode}): starting the four services (Stripe: {stack.stripe_kind} at {stripe_url})")
    try:
        stack.start()
        say(f"mode ({mode}): ready; seeded product {stack.seeded.product_id if stack.seeded else '?'}")
        return loop.run(drive_shop(stack, infra, opts, mode))
    finally:
        stack.stop()
