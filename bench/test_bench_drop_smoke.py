"""The drop benchmark still works: a tiny drop (60 buyers, 10 units) sells exactly the stock, never more.

Benchmarks are not tests: this asserts counts only, never timings.
"""

from __future__ import annotations

from pathlib import Path

from bench.common.stack import BenchInfra
from bench.drop.run import parse_args, run


def test_a_tiny_drop_sells_exactly_its_stock_and_every_buyer_gets_an_answer(infra: BenchInfra, tmp_path: Path) -> None:
    result = run(parse_args(["--tiny", "--results-dir", str(tmp_path / "results")]), infra=infra)

    drop = result["drop"]
    assert (drop["buyers"], drop["stock"]) == (60, 10)
    assert drop["paid"] == 10, drop["outcomes"]
    assert drop["oversold"] == 0 and drop["catalog"]["stock_sold"] == 10
    assert drop["server_errors_5xx"] == 0 and drop["no_answer"] == 0, drop["outcomes"]
    # Every buyer was told: paid, or sold out (at the POST or once catalog refused the reservation).
    assert drop["paid"] + drop["sold_out_at_post"] + drop["sold_out_later"] == 60, drop["outcomes"]
    assert drop["refusal_probe"]["refused_at_post"] == drop["refusal_probe"]["buyers"]

    mixed = result["declines_and_3ds"]
    assert mixed["server_errors_5xx"] == 0 and mixed["no_answer"] == 0, mixed["outcomes"]
    assert mixed["declined"] > 0 and mixed["needs_3ds"] > 0, mixed["outcomes"]
    assert mixed["oversold"] == 0 and mixed["conserved"], mixed["catalog_after_hold"]
    # Held units came back when the shortened 3-D Secure hold passed.
    assert mixed["catalog_after_hold"]["stock_reserved"] == 0, mixed["catalog_after_hold"]
    assert mixed["units_returned_by_declines"] + mixed["units_returned_by_expired_holds"] > 0
    assert (tmp_path / "results" / "drop-tiny.json").exists()
