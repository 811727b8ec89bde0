"""A message parked by a failing handler is found with `tweetshop dlq`, replayed after the fix and handled
exactly once; `trace` and `tail` show the order's events."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from tweetshop_contracts import StockReserved
from tweetshop_devstack.kafka_probe import read_topic
from tweetshop_devstack.testing import run_sync

ORDERS = "checkout.orders.v1"
DLQ = f"{ORDERS}.dlq"
# Stands in for a bug or a broken dependency: every new reservation fails until the "fix" drops it.
BREAK = """
CREATE FUNCTION catalog.ops_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reservations are refused by the ops test';
END $$;
CREATE TRIGGER ops_test_refuse BEFORE INSERT ON catalog.reservations
    FOR EACH ROW EXECUTE FUNCTION catalog.ops_test_refuse();
"""
FIX = "DROP TRIGGER ops_test_refuse ON catalog.reservations; DROP FUNCTION catalog.ops_test_refuse();"


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def test_a_parked_order_is_replayed_after_the_fix_and_reserved_exactly_once(
    service_process: Any, ops: Any, database: Any, kafka_bootstrap: str
) -> None:
    # The test plays a checkout that asks catalog for every reservation: no units allocated to checkout.
    catalog = service_process.start(
        "catalog",
        env={
            "TWEETSHOP_CONSUMER_MAX_RETRIES": "1",
            "TWEETSHOP_CONSUMER_RETRY_BACKOFF_S": "0.05",
            "TWEETSHOP_ALLOCATION_UNITS": "0",
        },
    )
    ops.confirm_operator_via(catalog.base_url)
    shop = ops.open_shop(catalog.base_url, stock=10)
    run_sync(_execute(database.admin_dsn, BREAK))
    order = shop.order(quantity=2)
    ops.publish(order)

    def parked() -> bool:
        samples = ops.scrape(catalog.base_url)
        return ops.value(samples, "tweetshop_messages_dead_lettered_total", topic=ORDERS) == 1

    ops.eventually(parked, what="the order to be parked on the DLQ")
    assert shop.product()["stock_reserved"] == 0

    summary = ops.cli("dlq", "list", "--json")
    assert summary.code == 0, summary
    assert {"topic": DLQ, "messages": 1, "pending": 1} in [json.loads(line) for line in summary.stdout.splitlines()]
    listing = ops.cli("dlq", "list", ORDERS)
    assert listing.code == 0, listing
    assert "OrderPlaced" in listing.stdout and f"{ops.namespace}catalog.orders" in listing.stdout
    assert "refused by the ops test" in listing.stdout and order.correlation_id in listing.stdout
    details = ops.cli("dlq", "show", ORDERS)
    assert details.code == 0, details
    assert str(order.order_id) in details.stdout and "can be replayed" in details.stdout
    ops.eventually(
        lambda: ops.value(ops.scrape(catalog.base_url), "tweetshop_dlq_pending_messages", topic=DLQ) == 1,
        what="the pending dead-letter gauge to read 1",
    )

    run_sync(_execute(database.admin_dsn, FIX))
    dry = ops.cli("dlq", "replay", ORDERS, "--dry-run")
    assert dry.code == 0 and "would replay 1 message" in dry.stdout, dry
    refused = ops.cli("dlq", "replay", ORDERS)  # not a terminal and no --yes: nothing is sent
    assert refused.code == 1 and "--yes" in refused.stderr, refused
    for key, refusal in (("", "set TWEETSHOP_OPERATOR_KEY"), ("not-the-operator-key", "refused the operator key")):
        denied = ops.cli("dlq", "replay", ORDERS, "--yes", env={"TWEETSHOP_OPERATOR_KEY": key})
        assert denied.code == 1 and refusal in denied.stderr, denied
    replayed = ops.cli("dlq", "replay", ORDERS, "--yes")
    assert replayed.code == 0, replayed
    assert f"replayed 1 message(s) from {DLQ} to {ORDERS}" in replayed.stdout
    ops.eventually(lambda: shop.product()["stock_reserved"] == 2, what="the replayed order to reserve its stock")
    ops.eventually(
        lambda: ops.value(ops.scrape(catalog.base_url), "tweetshop_dlq_pending_messages", topic=DLQ) == 0,
        what="the pending dead-letter gauge to fall to 0",
    )
    nothing = ops.cli("dlq", "replay", ORDERS, "--yes")
    assert nothing.code == 0 and "nothing to replay" in nothing.stderr, nothing

    # Sent again on purpose (by event id, past the cursor): the inbox makes it a no-op.
    again = ops.cli("dlq", "replay", ORDERS, "--event-id", str(order.event_id), "--yes")
    assert again.code == 0, again
    ops.eventually(
        lambda: ops.value(ops.scrape(catalog.base_url), "tweetshop_inbox_duplicates_skipped_total", topic=ORDERS) == 1,
        what="the second copy to be skipped as a duplicate",
    )
    assert shop.product()["stock_reserved"] == 2
    records = run_sync(read_topic(kafka_bootstrap, f"{ops.namespace}catalog.reservations.v1"))
    reserved = [e for e in (r.event("catalog.reservations.v1") for r in records) if isinstance(e, StockReserved)]
    assert [e.order_id for e in reserved] == [order.order_id], "one reservation answer, no more"

    trace = ops.cli("trace", str(order.order_id))
    assert trace.code == 0, trace
    lines = trace.stdout.splitlines()
    assert lines[0] == f"order {order.order_id}: 5 events; correlation_id {order.correlation_id}", trace.stdout
    seen = [(line.split()[1], line.split()[3]) for line in lines[2:]]
    # The original, the replayed and the forced copy on the topic, the parked one on the DLQ, catalog's answer.
    assert seen.count((ORDERS, "OrderPlaced")) == 3 and seen.count((DLQ, "OrderPlaced")) == 1, trace.stdout
    assert seen[0] == (ORDERS, "OrderPlaced") and seen[-1] == ("catalog.reservations.v1", "StockReserved")
    assert "PARKED by" in next(line for line in lines if f" {DLQ} " in line)

    tail = ops.cli("tail", ORDERS, "--from-beginning", "--limit", "3", "--idle-timeout", "10")
    assert tail.code == 0, tail
    assert tail.stdout.count("OrderPlaced") == 3 and order.correlation_id in tail.stdout

    # Without --from-beginning, tail shows what arrives from now on.
    live = ops.cli.start("tail", ORDERS, "--limit", "1", "--idle-timeout", "60")
    try:
        assert live.stderr is not None
        assert "tailing" in live.stderr.readline()  # positioned at the end: publish only now
        newer = shop.order()
        ops.publish(newer)
        out, _ = live.communicate(timeout=90)
    finally:
        live.kill()
    assert live.returncode == 0 and newer.correlation_id in out and order.correlation_id not in out, out
