"""Prometheus metrics of feed (the backbone's own live in tweetshop_platform.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

TWEETS_POSTED = Counter("tweetshop_feed_tweets_posted_total", "Tweets posted", ["kind"])
PRODUCT_EVENTS = Counter(
    "tweetshop_feed_product_events_total",
    "Product events applied to the read model, or skipped as stale (an older version than the stored one)",
    ["outcome"],
)
FOLLOWS = Counter(
    "tweetshop_feed_follows_total",
    "Follow and unfollow requests by outcome (follow, already_following, unfollow, not_following)",
    ["outcome"],
)
