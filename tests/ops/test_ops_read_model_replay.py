"""`tweetshop replay feed.products` rebuilds feed's product cards from catalog.products.v1 while feed runs,
and feed keeps applying new events afterwards."""

from __future__ import annotations

import uuid
from typing import Any

from tweetshop_contracts import ProductListed, ProductUpdated
from tweetshop_devstack.testing import fetch, run_sync


def _product(event_type: type[ProductListed] | type[ProductUpdated], product_id: uuid.UUID, **fields: Any) -> Any:
    base: dict[str, Any] = {
        "producer": "catalog",
        "correlation_id": f"ops-replay-{product_id.hex[:8]}",
        "product_id": product_id,
        "merchant_id": uuid.UUID(int=7),
        "title": "Mug",
        "price_minor": 1000,
        "currency": "EUR",
        "stock_available": 5,
        "version": 1,
    }
    return event_type(**(base | fields))


def test_replay_rebuilds_feeds_product_cards_from_the_topic_while_feed_runs(
    service_process: Any, ops: Any, database: Any
) -> None:
    feed = service_process.start("feed")
    ops.confirm_operator_via(feed.base_url)
    mug, cup = uuid.uuid4(), uuid.uuid4()
    ops.publish(
        _product(ProductListed, mug),
        _product(ProductUpdated, mug, price_minor=1500, version=2),
        _product(ProductListed, cup, title="Cup"),
    )

    def cards() -> dict[uuid.UUID, tuple[int, int]]:
        rows = run_sync(fetch(database.admin_dsn, "SELECT id, price_minor, version FROM feed.products"))
        return {r["id"]: (r["price_minor"], r["version"]) for r in rows}

    expected = {mug: (1500, 2), cup: (1000, 1)}
    ops.eventually(lambda: cards() == expected, what="feed to keep both product cards")
    # The read model goes wrong (a bad migration, a bug, a hand edit): one card wrong, one gone.
    run_sync(fetch(database.admin_dsn, "UPDATE feed.products SET price_minor = 1 WHERE id = $1", mug))
    run_sync(fetch(database.admin_dsn, "DELETE FROM feed.products WHERE id = $1", cup))

    dry = ops.cli("replay", "feed.products", "--dry-run")
    assert dry.code == 0 and "would rebuild feed.products" in dry.stdout and "from 3 messages" in dry.stdout, dry
    assert cards() == {mug: (1, 2)}, "a dry run changes nothing"
    rebuilt = ops.cli("replay", "feed.products", "--yes")
    assert rebuilt.code == 0, rebuilt
    assert "3 events applied, 0 duplicates skipped" in rebuilt.stdout and "1 rows before, 2 now" in rebuilt.stdout
    assert cards() == expected
    group = f"{ops.namespace}feed.products"
    inbox = run_sync(fetch(database.admin_dsn, "SELECT count(*) AS n FROM feed.inbox WHERE consumer = $1", group))
    assert inbox[0]["n"] == 3, "the rebuilt read model's inbox holds every event applied"

    # Feed's own consumer goes on from where it was: a new price still reaches the card.
    ops.publish(_product(ProductUpdated, cup, price_minor=900, version=2))
    ops.eventually(lambda: cards() == {mug: (1500, 2), cup: (900, 2)}, what="feed to apply the new price")

    unknown = ops.cli("replay", "feed.nothing", "--yes")
    assert unknown.code == 1 and "feed.products" in unknown.stderr, unknown
