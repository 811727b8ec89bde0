"""The metrics SREs watch are present on /metrics and move when a real order goes through catalog."""

from __future__ import annotations

import json
from typing import Any

import httpx

ORDERS = "checkout.orders.v1"
HANDLER = "on_order_event"


def test_metrics_move_when_catalog_reserves_stock_for_an_order(service_process: Any, ops: Any) -> None:
    # The test plays a checkout that asks catalog for every reservation: no units allocated to checkout.
    catalog = service_process.start("catalog", env={"TWEETSHOP_LOG_FORMAT": "json", "TWEETSHOP_ALLOCATION_UNITS": "0"})
    shop = ops.open_shop(catalog.base_url)
    group = f"{ops.namespace}catalog.orders"
    before = ops.scrape(catalog.base_url)
    assert ops.value(before, "tweetshop_messages_received_total", topic=ORDERS) == 0

    order = shop.order(quantity=2)
    ops.publish(order)
    ops.eventually(lambda: shop.product()["stock_reserved"] == 2, what="catalog to reserve 2 units")
    ops.publish(order)  # delivered again, as at-least-once delivery may: the inbox drops it

    def counted() -> Any:
        samples = ops.scrape(catalog.base_url)
        return samples if ops.value(samples, "tweetshop_inbox_duplicates_skipped_total", topic=ORDERS) >= 1 else None

    after = ops.eventually(counted, what="the duplicate to be counted")
    labels = {"topic": ORDERS, "handler": HANDLER}
    assert ops.value(after, "tweetshop_messages_received_total", **labels) == 2
    assert ops.value(after, "tweetshop_messages_processed_total", **labels) == 1
    assert ops.value(after, "tweetshop_inbox_duplicates_skipped_total", **labels) == 1
    assert ops.value(after, "tweetshop_messages_failed_total", **labels) == 0
    assert ops.value(after, "tweetshop_messages_dead_lettered_total", **labels) == 0
    assert ops.value(after, "tweetshop_message_processing_seconds_count", **labels) == 2
    # The reservation and the product's new stock left through the outbox.
    assert ops.value(after, "tweetshop_outbox_published_total", topic="catalog.reservations.v1") == 1
    published_products = ops.value(after, "tweetshop_outbox_published_total", topic="catalog.products.v1")
    assert published_products > ops.value(before, "tweetshop_outbox_published_total", topic="catalog.products.v1")
    assert ops.value(after, "tweetshop_http_requests_total", method="POST", route="/products", status="201") == 1
    assert ops.value(after, "tweetshop_http_request_seconds_count", method="POST", route="/merchants") == 1

    def settled() -> Any:
        samples = ops.scrape(catalog.base_url)
        lag_partitions = [
            v for (name, ls), v in samples.items() if name == "tweetshop_consumer_lag" and ("group", group) in ls
        ]
        # One gauge per partition of the topic, all at zero once the group has committed the order.
        drained = ops.value(samples, "tweetshop_outbox_backlog") == 0
        return samples if len(lag_partitions) == 6 and sum(lag_partitions) == 0 and drained else None

    samples = ops.eventually(settled, what="lag 0 on 6 partitions and an empty outbox")
    assert ops.value(samples, "tweetshop_outbox_oldest_age_seconds") == 0
    assert ("tweetshop_dlq_pending_messages", frozenset({("topic", f"{ORDERS}.dlq")})) in samples
    assert ops.value(samples, "tweetshop_dlq_pending_messages", topic=f"{ORDERS}.dlq") == 0

    ready = httpx.get(f"{catalog.base_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    samples = ops.scrape(catalog.base_url)
    assert ops.value(samples, "tweetshop_ready", dependency="database") == 1
    assert ops.value(samples, "tweetshop_ready", dependency="broker") == 1

    # The service serves the contract of the topics it takes part in.
    own = httpx.get(f"{catalog.base_url}/asyncapi.json", timeout=10).json()
    assert own["asyncapi"] == "3.0.0"
    assert {"checkoutOrdersV1", "catalogReservationsV1", "catalogProductsV1"} <= set(own["channels"])
    assert "trackingLocationsV1" not in own["channels"]

    # Logs: JSON lines, and every line about the order carries its correlation_id (one grep follows it).
    lines = [json.loads(line) for line in catalog.log_path.read_text().splitlines() if line.startswith("{")]
    about_order = [line for line in lines if str(order.order_id) in json.dumps(line) or line.get("event_id")]
    assert about_order, "catalog logged nothing about the order"
    assert all(line.get("correlation_id") == order.correlation_id for line in about_order), about_order
    handled = [line for line in about_order if line["event"] == "event handled"]
    assert len(handled) == 1 and handled[0]["service"] == "catalog" and handled[0]["event_type"] == "OrderPlaced"
    assert [line["event"] for line in about_order].count("duplicate event skipped") == 1
