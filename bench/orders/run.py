"""The orders benchmark: sustained purchases/s, latency at 70 % of it, CPU per order, lost and duplicates.

Phases of a full run (each printed as it finishes, all written to
``bench/results/orders.json``):

1. the parts underneath alone: raw broker produce/consume, raw Postgres commits,
   localstripe's own PaymentIntent ceiling (concurrency 1 and 16);
2. mode (b): the shop paying through the payment stand-in (fixed latency): a
   rate ladder until a step is not sustained, one refining step, a run at 70 % of
   the sustained rate, a profile at the sustained rate, a run with 429s injected; before
   the ladder, the returning buyer (``bench.orders.returning``): 20 new buyers each buy
   once saving the card, then again with it (p50/p99 POST→OrderPaid of both, side by side);
3. the hand-written baseline through the same stand-in: its own ladder, and a run
   at the shop's 70 % rate for a like-for-like latency and CPU comparison;
4. mode (a): the shop paying through localstripe (persistence off): ladder and 70 %.

``--tiny`` sends 20 orders at 5/s in mode (b) only, after 5 returning buyers: the smoke test's size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import loop
from bench.common.cpu import machine_ticks, steal_share
from bench.common.gc_settings import collect_like_the_services
from bench.common.results import RESULTS_DIR, machine_info, markdown_table, write_json
from bench.common.stack import BenchInfra, stop_on_signals
from bench.orders.driver import say
from bench.orders.load import DRAIN_S, P99_BOUND_S
from bench.orders.options import DEFAULT_LADDER, Options
from bench.orders.phases import drive_baseline, drive_raw, run_shop
from bench.orders.report import summary_rows

__all__ = ["Options", "main", "parse_args", "run", "summary_rows"]


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
            result["modes"]["b"] = run_shop(infra, opts, "b")
        if opts.baseline and not opts.tiny:
            rate70 = result["modes"].get("b", {}).get("rate_at_70")
            say("baseline: starting the hand-written pipeline")
            result["baseline"] = loop.run(drive_baseline(infra, opts, rate70))
        if "a" in modes:
            result["modes"]["a"] = run_shop(infra, opts, "a")
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
    stop_on_signals()
    with contextlib.suppress(KeyboardInterrupt):
        run(opts)
        return 0
    return 130


if __name__ == "__main__":
    sys.exit(main())
