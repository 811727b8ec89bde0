"""The stack at rest: CPU cores the broker and the four services burn while no one buys anything.

    python -m bench.idle                       # 60 s window after 20 s of quiet, topics as `make run` makes them
    python -m bench.idle --partitions 6        # as a production deployment creates them
    python -m bench.idle --seconds 20 --tiny   # the smoke size

Starts its own Tansu and Postgres, then the four services as `make run` starts them (same modules, same
environment, free ports; ``bench.common.stack.ServiceStack``), seeds a merchant, a product and its tweet,
waits for the seeding's events to settle, and measures each part's CPU time over the window with psutil.
Issue 16's goal: the whole stack (services and broker) at most 0.1 cores at rest. Postgres is reported too.

Then the other half of that goal, a purchase on a stack at rest no slower: ``--purchases`` single purchases, each
after ``--gap`` seconds in which nothing happened (longer than ``TWEETSHOP_KAFKA_QUIET_AFTER_S``, so every consumer
that slows down at rest has), timed from just before the ``POST /orders`` to its ``OrderPaid`` reaching our own
consumer of ``checkout.orders.v1`` (started after the CPU window, so it is not measured as the stack's).
Writes ``bench/results/idle.json`` (or ``idle-tiny.json``) and its history copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from tweetshop_devstack.run import MAKE_RUN_DEFAULTS
from tweetshop_devstack.seed import order_body

from bench.common import loop
from bench.common.cpu import CpuMeter, machine_ticks, steal_share
from bench.common.results import RESULTS_DIR, SummaryRow, machine_info, write_json
from bench.common.stack import BenchInfra, ServiceStack, stop_on_signals
from bench.common.stats import Latency
from bench.common.watch import OrderTimes, TopicWatcher

GOAL_CORES = 0.1  # services + broker, issue 16


def say(message: str) -> None:
    """Progress on stdout."""
    print(f"bench-idle | {message}", flush=True)


def measure(stack: ServiceStack, infra: BenchInfra, seconds: float) -> dict[str, Any]:
    """Cores per part over ``seconds`` of rest, and the machine's steal meanwhile."""
    pids = {**stack.pids(), **{k: v for k, v in infra.pids().items() if k in ("broker", "postgres")}}
    meter = CpuMeter({name: [pid] for name, pid in pids.items()})
    before, ticks = meter.snapshot(), machine_ticks()
    started = time.monotonic()
    time.sleep(seconds)
    used = CpuMeter.delta(before, meter.snapshot())
    window = time.monotonic() - started
    cores = {name: round(cpu / window, 4) for name, cpu in used.items()}
    services = round(sum(v for k, v in cores.items() if k not in ("broker", "postgres")), 4)
    return {
        "window_s": round(window, 1),
        "cores": cores,
        "services_cores": services,
        "broker_cores": cores.get("broker"),
        "services_and_broker_cores": round(services + (cores.get("broker") or 0.0), 4),
        "steal_share": steal_share(ticks, machine_ticks()),
        # Each part's CPU since it started, before the window: a real service has used seconds (imports,
        # migrations), a wrong pid next to nothing; the window itself may round to 0 for a quiet one.
        "cpu_s_before_window": {name: round(cpu, 3) for name, cpu in before.items()},
    }


async def purchases_at_rest(stack: ServiceStack, infra: BenchInfra, count: int, gap_s: float) -> dict[str, Any]:
    """``count`` purchases one at a time, each after ``gap_s`` of rest: POST→OrderPaid of each, and what failed."""
    assert stack.seeded is not None
    seeded, base = stack.seeded, stack.url("checkout").rstrip("/")
    times = OrderTimes()
    watcher = TopicWatcher(infra.kafka_bootstrap, [stack.topic("checkout.orders.v1")], times.on_record)
    await watcher.start()
    waits: list[float] = []
    errors: list[str] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0)) as session:
            for n in range(count):
                await asyncio.sleep(gap_s)
                body = order_body(seeded.tweet_id, seeded.product_id, buyer_id=f"bench-idle-{n}")
                started = time.monotonic()
                headers = {"Idempotency-Key": f"bench-idle-{uuid.uuid4().hex}"}
                async with session.post(f"{base}/orders", json=body, headers=headers) as response:
                    if response.status != 202:
                        errors.append(f"POST /orders: HTTP {response.status}: {(await response.text())[:120]}")
                        continue
                    order_id = str((await response.json())["id"])
                while not times.paid.get(order_id) and time.monotonic() - started < 30.0:
                    await asyncio.sleep(0.005)
                if times.paid.get(order_id):
                    waits.append(times.paid[order_id][0] - started)
                else:
                    errors.append(f"order {order_id} not paid within 30 s")
    finally:
        await watcher.stop()
    return {"count": count, "gap_s": gap_s, "to_order_paid": Latency.of_seconds(waits).as_dict(), "errors": errors}


def run(
    *,
    seconds: float,
    quiet_s: float,
    partitions: int,
    results_dir: Path,
    tiny: bool,
    purchases: int = 0,
    gap_s: float = 8.0,
    infra: BenchInfra | None = None,
) -> dict[str, Any]:
    """Start the parts (``infra``: already running ones, as the smoke test passes), rest, measure; the result as
    written to ``idle.json``. The broker is measured only when this run started it."""
    own_infra = infra is None
    if infra is None:
        infra = BenchInfra(localstripe=False, standin=True)
        infra.start()
    try:
        stack = ServiceStack(
            infra,
            label="idle",
            stripe_url=infra.standin_url,
            stripe_kind="standin",
            extra_env={"TWEETSHOP_KAFKA_TOPIC_PARTITIONS": str(partitions)},
        )
        say(f"starting the four services (topics with {partitions} partition(s))")
        try:
            stack.start()
            say(f"ready and seeded; {quiet_s:g} s of quiet, then {seconds:g} s measured")
            time.sleep(quiet_s)
            measured = measure(stack, infra, seconds)
            if purchases:
                say(f"{purchases} single purchases, each after {gap_s:g} s of rest")
                measured["purchases_at_rest"] = loop.run(purchases_at_rest(stack, infra, purchases, gap_s))
        finally:
            stack.stop()
    finally:
        if own_infra:
            infra.stop()
    total = measured["services_and_broker_cores"]
    say(f"at rest: {json.dumps(measured['cores'])}; services+broker {total} cores (goal <= {GOAL_CORES})")
    row = SummaryRow(
        benchmark="idle",
        metric=f"services + broker at rest ({partitions} partition(s) per topic)",
        value=total,
        unit="cores",
        goal=f"<= {GOAL_CORES}",
        met=total <= GOAL_CORES,
    )
    rows = [row.as_dict()]
    if purchases:
        at_rest = measured["purchases_at_rest"]
        paid = at_rest["to_order_paid"]
        errors = f"; errors: {at_rest['errors'][:3]}" if at_rest["errors"] else ""
        say(
            f"a purchase at rest: p50/max POST→OrderPaid {paid['p50_ms']}/{paid['max_ms']} ms "
            f"({paid['count']} of {purchases} paid){errors}"
        )
        rows.append(
            SummaryRow(
                benchmark="idle",
                metric=f"p50 POST→OrderPaid of a purchase after {gap_s:g} s of rest ({paid['count']} of {purchases})",
                value=paid["p50_ms"],
                unit="ms",
                goal="no worse than before (~170 ms)",
                met=None,
            ).as_dict()
        )
    result = {
        "benchmark": "idle",
        "command": "python -m bench.idle "
        + ("--tiny " if tiny else "")
        + f"--seconds {seconds:g} --partitions {partitions} --purchases {purchases} --gap {gap_s:g}",
        "machine": machine_info(),
        "partitions": partitions,
        **measured,
        "summary_rows": rows,
    }
    output = write_json("idle-tiny" if tiny else "idle", result, results_dir)
    say(f"results in {output}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--quiet", type=float, default=20.0, help="rest before measuring (seeding settles)")
    parser.add_argument(
        "--partitions",
        type=int,
        default=int(MAKE_RUN_DEFAULTS["TWEETSHOP_KAFKA_TOPIC_PARTITIONS"]),
        help="partitions per topic (default: make run's)",
    )
    parser.add_argument("--purchases", type=int, default=5, help="single purchases after the window (0: none)")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds of rest before each purchase")
    parser.add_argument(
        "--tiny", action="store_true", help="smoke size: 10 s of quiet, a 10 s window, 2 purchases 6 s apart"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    stop_on_signals()
    seconds, quiet = (10.0, 10.0) if args.tiny else (args.seconds, args.quiet)
    purchases, gap = (2, 6.0) if args.tiny else (args.purchases, args.gap)
    run(
        seconds=seconds,
        quiet_s=quiet,
        partitions=args.partitions,
        results_dir=args.results_dir,
        tiny=args.tiny,
        purchases=purchases,
        gap_s=gap,
    )
    return 0
