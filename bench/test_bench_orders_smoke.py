"""The orders benchmark still works: a tiny run (20 orders at 5/s through the payment stand-in, and 5 returning
buyers who save a card and pay with it) counts right.

Benchmarks are not tests: this asserts counts only, never timings.
"""

from __future__ import annotations

from pathlib import Path

from bench.common.stack import BenchInfra
from bench.orders.run import Options, run


def test_every_tiny_benchmark_order_is_paid_once_and_shipped_once(infra: BenchInfra, tmp_path: Path) -> None:
    result = run(Options(tiny=True, tiny_orders=20, tiny_rate=5.0, results_dir=tmp_path / "results"), infra=infra)

    step = result["modes"]["b"]["steps"][-1]
    assert step["placed"] == 20, step["errors"]
    assert (step["paid"], step["shipped"]) == (20, 20)
    assert step["lost"] == 0 and step["failed"] == 0
    assert (step["duplicate_paid"], step["duplicate_shipped"], step["orders_with_several_intents"]) == (0, 0, 0)
    totals = result["modes"]["b"]["totals"]
    assert totals["lost"] == 0 and totals["orders_with_several_payment_intents"] == 0
    assert totals["paid_once"] == totals["shipped_once"] == totals["orders"]
    # The returning buyer (5 buyers): each paid once for the first purchase (saving the card) and once with it.
    returning = result["modes"]["b"]["returning_buyer"]
    assert returning["errors"] == [] and returning["saved_cards"] == 5
    for purchase in ("first", "returning"):
        counts = returning[purchase]
        assert (counts["placed"], counts["paid_once"], counts["one_payment_intent"]) == (5, 5, 5), purchase
    assert any(r["benchmark"] == "orders, returning buyer" for r in result["summary_rows"])
    assert (tmp_path / "results" / "orders-tiny.json").exists()


def test_orders_rate_limited_by_stripe_are_paid_once_after_backing_off(infra: BenchInfra, tmp_path: Path) -> None:
    # A third of the stand-in's answers are 429s: each refused call is retried after a short backoff (it made
    # nothing at Stripe), never a second PaymentIntent, never an order left unpaid.
    options = Options(
        tiny=True,
        tiny_orders=20,
        tiny_rate=5.0,
        tiny_rate_429=0.33,
        tiny_returning_buyers=0,  # measured by the test above
        results_dir=tmp_path / "results",
    )
    result = run(options, infra=infra)

    step = result["modes"]["b"]["steps"][-1]
    assert step["placed"] == 20, step["errors"]
    assert (step["paid"], step["shipped"], step["failed"], step["lost"]) == (20, 20, 0, 0)
    assert (step["duplicate_paid"], step["orders_with_several_intents"]) == (0, 0)
    assert infra.standin_stats()["rate_limited"] > 0, "the stand-in answered no 429: this proved nothing"
