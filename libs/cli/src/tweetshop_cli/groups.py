"""Our consumer groups and the read models that can be rebuilt from topics.

Group ids are ``<namespace><service>.<name>`` as ``ServiceRuntime.subscribe`` builds them;
tests/ops/test_ops_cli_tables.py checks this table against every service's main.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from tweetshop_contracts import topics


@dataclass(frozen=True)
class Subscription:
    """One reliable consumer: a service's group on one topic."""

    service: str
    group: str  # without the namespace
    topic: str


SUBSCRIPTIONS: tuple[Subscription, ...] = (
    Subscription("catalog", "catalog.orders", topics.CHECKOUT_ORDERS),
    Subscription("feed", "feed.merchants", topics.CATALOG_MERCHANTS),
    Subscription("feed", "feed.products", topics.CATALOG_PRODUCTS),
    Subscription("checkout", "checkout.merchants", topics.CATALOG_MERCHANTS),
    Subscription("checkout", "checkout.products", topics.CATALOG_PRODUCTS),
    Subscription("checkout", "checkout.tweets", topics.FEED_BUYABLE_TWEETS),
    Subscription("checkout", "checkout.reservations", topics.CATALOG_RESERVATIONS),
    Subscription("checkout", "checkout.shipments", topics.TRACKING_SHIPMENTS),
    Subscription("tracking", "tracking.orders", topics.CHECKOUT_ORDERS),
)


@dataclass(frozen=True)
class ReadModel:
    """A table a service keeps only from one topic, so it can be dropped and rebuilt from that topic."""

    name: str
    service: str  # also its Postgres schema
    topic: str
    group: str  # the subscription that keeps it (its inbox rows are replaced too)
    tables: tuple[str, ...]
    handler: str  # "module:function", the service's own handler of that subscription
    description: str


READ_MODELS: dict[str, ReadModel] = {
    model.name: model
    for model in (
        ReadModel(
            "feed.products",
            "feed",
            topics.CATALOG_PRODUCTS,
            "feed.products",
            ("products",),
            "feed.handlers:on_product_event",
            "the live product cards on the timeline (price, stock, sold out)",
        ),
        ReadModel(
            "feed.merchants",
            "feed",
            topics.CATALOG_MERCHANTS,
            "feed.merchants",
            ("merchants",),
            "feed.handlers:on_merchant_event",
            "merchant handles and names shown on tweets",
        ),
        ReadModel(
            "checkout.merchants",
            "checkout",
            topics.CATALOG_MERCHANTS,
            "checkout.merchants",
            ("merchants",),
            "checkout.handlers:on_merchant_event",
            "whose API key refunds a merchant's orders (the key's hash)",
        ),
        ReadModel(
            "checkout.products",
            "checkout",
            topics.CATALOG_PRODUCTS,
            "checkout.products",
            ("products",),
            "checkout.handlers:on_product_event",
            "prices and stock checkout charges from",
        ),
        ReadModel(
            "checkout.tweets",
            "checkout",
            topics.FEED_BUYABLE_TWEETS,
            "checkout.tweets",
            ("buyable_tweets",),
            "checkout.handlers:on_buyable_tweet",
            "which product each buyable tweet sells",
        ),
    )
}
