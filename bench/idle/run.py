"""The stack at rest: CPU cores the broker and the four services burn while no one buys anything.

    python -m bench.idle                       # 60 s window after 20 s of quiet, topics with 1 partition
    python -m bench.idle --partitions 6        # as a production deployment creates them
    python -m bench.idle --seconds 20 --tiny   # the smoke size

Starts its own Tansu and Postgres, then the four services as `make run` starts them (same modules, same
environment, free ports; ``bench.common.stack.ServiceStack``), seeds a merchant, a product and its tweet,
waits for the seeding's events to settle, and measures each part's CPU time over the window with psutil.
Issue 16's goal: the whole stack (services and broker) at most 0.1 cores at rest. Postgres is reported too.
Writes ``bench/results/idle.json`` (or ``idle-tiny.json``) and its history copy.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common.cpu import CpuMeter, machine_ticks, steal_share
from bench.common.results import RESULTS_DIR, SummaryRow, machine_info, write_json
from bench.common.stack import BenchInfra, ServiceStack

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
    }


def run(
    *,
    seconds: float,
    quiet_s: float,
    partitions: int,
    results_dir: Path,
    tiny: bool,
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
    result = {
        "benchmark": "idle",
        "command": "python -m bench.idle "
        + ("--tiny " if tiny else "")
        + f"--seconds {seconds:g} --partitions {partitions}",
        "machine": machine_info(),
        "partitions": partitions,
        **measured,
        "summary_rows": [row.as_dict()],
    }
    output = write_json("idle-tiny" if tiny else "idle", result, results_dir)
    say(f"results in {output}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    parser.add_argument("--quiet", type=float, default=20.0, help="rest before measuring (seeding settles)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic (make run: 1)")
    parser.add_argument("--tiny", action="store_true", help="smoke size: 10 s of quiet, a 10 s window")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    seconds, quiet = (10.0, 10.0) if args.tiny else (args.seconds, args.quiet)
    run(seconds=seconds, quiet_s=quiet, partitions=args.partitions, results_dir=args.results_dir, tiny=args.tiny)
    return 0
