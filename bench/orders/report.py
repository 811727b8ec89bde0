"""The orders benchmark's rows in the summary table, and the CPU arithmetic behind them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.common.results import SummaryRow

GOAL_ORDERS_PER_S = 300
GOAL_P99_MS = 300
GOAL_RATIO = 0.5


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


def first_step_note(mode: dict[str, Any]) -> str:
    """Why no rate was sustained: the lowest step's verdict."""
    steps = [st for st in mode.get("steps", []) if not str(st.get("label", "")).startswith("warm")]
    if not steps:
        return "not measured"
    first = steps[0]
    return f"none: even {first['target_rate']:g}/s failed ({first['verdict']})"


def returning_rows(mode: dict[str, Any]) -> list[SummaryRow]:
    """The returning buyer beside the first purchase: p50 and p99 POST→OrderPaid (stand-in only)."""
    measured = mode.get("returning_buyer")
    if not measured:
        return []
    first, again = measured["first"], measured["returning"]
    return [
        SummaryRow(
            "orders, returning buyer",
            f"{pct} POST→OrderPaid, saved card",
            (again.get("to_order_paid") or {}).get(f"{pct}_ms"),
            "ms",
            (first.get("to_order_paid") or {}).get(f"{pct}_ms"),
            "first purchase (saving the card)",
            note=f"{again['paid']} of {measured['buyers']} buyers paid twice" if pct == "p50" else "",
        )
        for pct in ("p50", "p99")
    ]


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
        return rows + returning_rows(b)
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
                first_step_note(b) if sustained is None else "",
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
        rows.extend(returning_rows(b))
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
                note=first_step_note(a) if a.get("sustained_orders_per_s") is None else "",
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
