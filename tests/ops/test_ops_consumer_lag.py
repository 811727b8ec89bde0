"""Consumer lag rises while a consumer is stopped and falls back to zero once it resumes, in `tweetshop lag`
and in the service's own gauge."""

from __future__ import annotations

import json
from typing import Any

ORDERS = "checkout.orders.v1"


def test_lag_rises_while_catalog_is_stopped_and_falls_to_zero_after_it_resumes(service_process: Any, ops: Any) -> None:
    # The test plays a checkout that asks catalog for every reservation: no units allocated to checkout.
    catalog = service_process.start("catalog", env={"TWEETSHOP_ALLOCATION_UNITS": "0"})
    shop = ops.open_shop(catalog.base_url)
    group = f"{ops.namespace}catalog.orders"

    def lag_of_catalog() -> int:
        result = ops.cli("lag", "--json", "--group", "catalog.orders")
        assert result.code == 0, result
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert rows and {r["group"] for r in rows} == {group}, result
        assert {r["topic"] for r in rows} == {ORDERS}
        return sum(int(r["lag"]) for r in rows)

    ops.publish(shop.order())
    ops.eventually(lambda: shop.product()["stock_reserved"] == 1, what="the first order to be reserved")
    ops.eventually(lambda: lag_of_catalog() == 0, what="catalog to commit the first order")

    catalog.stop()
    ops.publish(*(shop.order() for _ in range(2)))
    assert lag_of_catalog() == 2
    ops.publish(*(shop.order() for _ in range(3)))
    assert lag_of_catalog() == 5

    table = ops.cli("lag")
    assert table.code == 0, table
    group_line = next(line for line in table.stdout.splitlines() if line.startswith(group) and ORDERS not in line)
    assert group_line.split()[-1] == "5", table.stdout
    everything = ops.cli("lag", "--all", "--json")  # adds any other group the broker lists in the namespace
    assert everything.code == 0, everything
    assert group in {json.loads(line)["group"] for line in everything.stdout.splitlines()}

    catalog.start()
    ops.eventually(lambda: shop.product()["stock_reserved"] == 6, what="catalog to catch up on the 5 orders")
    ops.eventually(lambda: lag_of_catalog() == 0, what="the lag to fall back to zero")

    def gauge_at_zero() -> bool:
        samples = ops.scrape(catalog.base_url)
        partitions = [v for (n, ls), v in samples.items() if n == "tweetshop_consumer_lag" and ("group", group) in ls]
        return len(partitions) == 6 and sum(partitions) == 0

    ops.eventually(gauge_at_zero, what="the restarted service's lag gauge to read zero")
