"""`make bench`: the orders, the locations, the drop and the at-rest benchmarks, then one markdown summary of them.

    python -m bench.run_all            # full size (about half an hour on 2 cores)
    python -m bench.run_all --tiny     # the smoke size, a minute or two

Writes ``bench/results/orders.json`` (or ``orders-tiny.json``), whatever
``bench.locations`` writes (``locations.json``), ``drop.json`` (or
``drop-tiny.json``), ``idle.json``, the orders profile (``profile-*.txt``) and
``bench/results/summary.md``. The locations and the drop benchmarks run each as
its own process (each starts its own broker and database).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common.results import RESULTS_DIR, machine_info, markdown_table
from bench.common.stack import REPO_ROOT, stop_on_signals
from bench.orders.run import Options, parse_args, run


def say(message: str) -> None:
    """Progress on stdout."""
    print(f"bench | {message}", flush=True)


def _run_child(argv: list[str]) -> int:
    """Run a benchmark in its own process; its exit code. Interrupted (Ctrl-C, or SIGTERM through
    ``stop_on_signals``), it passes a SIGTERM on and waits for the child to stop its own stack:
    ``subprocess.run`` would SIGKILL it, and its broker, Postgres and services would live on."""
    child = subprocess.Popen(argv, cwd=REPO_ROOT)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def run_locations(tiny: bool, results_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """Run ``python -m bench.locations`` if it exists; its JSON and a markdown section for the summary."""
    if importlib.util.find_spec("bench.locations") is None:
        return None, "_bench.locations is not there yet: skipped._"
    output = results_dir / ("locations-tiny.json" if tiny else "locations.json")
    argv = [sys.executable, "-m", "bench.locations", "--output", str(output), *(["--tiny"] if tiny else [])]
    say("locations: " + " ".join(argv[1:]))
    code = _run_child(argv)
    if code != 0 or not output.exists():
        return None, f"_bench.locations exited with code {code}; see its output above._"
    data: dict[str, Any] = json.loads(output.read_text())
    if data.get("summary_rows"):
        return data, markdown_table(data["summary_rows"])
    try:
        # The locations package renders its own table from its results.
        module = importlib.import_module("bench.locations.run")
        return data, str(module.markdown(data["results"]))
    except (ImportError, AttributeError, KeyError, TypeError) as exc:
        return data, f"_results in {output.name}; no table ({exc!r})._"


def run_drop(tiny: bool, results_dir: Path) -> str:
    """Run ``python -m bench.drop``; a markdown section for the summary."""
    return _run_own_process("drop", tiny, results_dir)


def run_idle(tiny: bool, results_dir: Path) -> str:
    """Run ``python -m bench.idle`` (the stack at rest); a markdown section for the summary."""
    return _run_own_process("idle", tiny, results_dir)


def _run_own_process(name: str, tiny: bool, results_dir: Path) -> str:
    """``python -m bench.<name>`` as its own process (it starts its own broker and database); its summary table."""
    output = results_dir / (f"{name}-tiny.json" if tiny else f"{name}.json")
    output.unlink(missing_ok=True)  # never a stale table
    argv = [sys.executable, "-m", f"bench.{name}", "--results-dir", str(results_dir), *(["--tiny"] if tiny else [])]
    say(f"{name}: " + " ".join(argv[1:]))
    code = _run_child(argv)
    if not output.exists():
        return f"_bench.{name} exited with code {code} and wrote nothing; see its output above._"
    table = markdown_table(json.loads(output.read_text()).get("summary_rows", []))
    return table if code == 0 else f"_bench.{name} exited with code {code} (a goal was missed)._\n\n{table}"


def _steal_words(share: float | None) -> str:
    if share is None:
        return ""
    return f"the hypervisor took {share:.0%} of the CPU time during the orders run (steal); "


def write_summary(
    results_dir: Path,
    orders: dict[str, Any] | None,
    locations_md: str | None,
    tiny: bool,
    drop_md: str | None = None,
    idle_md: str | None = None,
) -> Path:
    """``summary.md``: where it ran, the orders table, the locations table."""
    machine = (orders or {}).get("machine") or machine_info()
    lines = [
        f"# Benchmark summary{' (tiny smoke size: counts only, the timings mean nothing)' if tiny else ''}",
        "",
        f"Measured {machine.get('measured_at', '?')} on {machine.get('cpus', '?')} CPUs "
        f"(load average before {machine.get('loadavg_1_5_15', '?')}, after {machine.get('loadavg_after', '?')}; "
        f"{_steal_words(machine.get('steal_share'))}"
        "the machine is shared, so other work competes with the benchmark). Everything runs on this one "
        "machine: broker, Postgres, Stripe stand-in or localstripe, the four services and the load generator.",
        "",
    ]
    if orders is not None:
        cfg = orders.get("config", {})
        lines += [
            "## Orders (POST /orders → OrderPaid → ShipmentCreated)",
            "",
            f"Sustained = {cfg.get('sustained_means', '')}.",
            f"Mode (b) pays through the payment stand-in ({cfg.get('latency_ms', 100):g} ms per call; "
            "`bench/common/stripe_standin.py`, not Stripe); mode (a) through localstripe with persistence off. "
            f"Postgres durable (fsync on): {cfg.get('postgres_durable')}. Ratios are ours ÷ baseline "
            "(for latency and CPU, above 1 means we are slower or costlier).",
            "",
            markdown_table(orders.get("summary_rows", [])),
            "",
            "Details: `orders.json` (every step), `profile-orders.txt` (where the time goes).",
            "",
        ]
    if locations_md is not None:
        lines += [
            "## Locations (courier points → Postgres → tracking.locations.v1 → SSE watchers)",
            "",
            locations_md,
            "",
        ]
    if drop_md is not None:
        lines += [
            "## The drop (5,000 buyers, 300 units, one tweet; `bench/drop/`)",
            "",
            drop_md,
            "",
            "Details: `drop.json`.",
            "",
        ]
    if idle_md is not None:
        lines += ["## The stack at rest (`bench/idle/`)", "", idle_md, "", "Details: `idle.json`.", ""]
    path = results_dir / ("summary-tiny.md" if tiny else "summary.md")
    path.write_text("\n".join(lines))
    return path


def rebuild_summary(results_dir: Path, tiny: bool) -> int:
    """summary.md again from orders.json and locations.json (after re-running one of them on its own)."""
    suffix = "-tiny" if tiny else ""
    orders_file = results_dir / f"orders{suffix}.json"
    orders = json.loads(orders_file.read_text()) if orders_file.exists() else None
    if orders is not None:
        from bench.orders.report import summary_rows

        orders["summary_rows"] = [r.as_dict() for r in summary_rows(orders)]
    locations_md: str | None = None
    locations_file = results_dir / f"locations{suffix}.json"
    if locations_file.exists():
        data = json.loads(locations_file.read_text())
        try:
            module = importlib.import_module("bench.locations.run")
            locations_md = str(module.markdown(data["results"]))
        except (ImportError, AttributeError, KeyError, TypeError) as exc:
            locations_md = f"_results in {locations_file.name}; no table ({exc!r})._"
    drop_file = results_dir / f"drop{suffix}.json"
    drop_md = markdown_table(json.loads(drop_file.read_text()).get("summary_rows", [])) if drop_file.exists() else None
    idle_file = results_dir / f"idle{suffix}.json"
    idle_md = markdown_table(json.loads(idle_file.read_text()).get("summary_rows", [])) if idle_file.exists() else None
    path = write_summary(results_dir, orders, locations_md, tiny, drop_md, idle_md)
    print(path.read_text(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and write the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the smoke size")
    parser.add_argument("--skip-orders", action="store_true")
    parser.add_argument("--skip-locations", action="store_true")
    parser.add_argument("--skip-drop", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--orders-args", default="", help="extra arguments for bench.orders, e.g. '--modes b'")
    parser.add_argument("--summary-only", action="store_true", help="rebuild summary.md from the JSON files there")
    args = parser.parse_args(argv)
    stop_on_signals()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        return rebuild_summary(args.results_dir, args.tiny)
    orders: dict[str, Any] | None = None
    if not args.skip_orders:
        opts: Options = parse_args([*args.orders_args.split(), "--results-dir", str(args.results_dir)])
        opts.tiny = opts.tiny or args.tiny
        orders = run(opts)
    locations_md: str | None = None
    if not args.skip_locations:
        _, locations_md = run_locations(args.tiny, args.results_dir)
    drop_md = None if args.skip_drop else run_drop(args.tiny, args.results_dir)
    idle_md = None if args.skip_idle else run_idle(args.tiny, args.results_dir)
    path = write_summary(args.results_dir, orders, locations_md, args.tiny, drop_md, idle_md)
    say(f"summary in {path}")
    print(path.read_text(), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
