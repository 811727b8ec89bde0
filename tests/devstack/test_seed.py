"""The demo seed against an in-memory stand-in of the catalog and feed APIs (contract v1 shapes)."""

from __future__ import annotations

import json
import shlex
import uuid
from collections import Counter
from pathlib import Path

import httpx
from tweetshop_devstack.seed import PRODUCTS, SeedResult, buy_curl, following_retry_after, load_seed, seed

CATALOG = "http://catalog.test"
FEED = "http://feed.test"


class FakeShop:
    """Catalog and feed as far as the seed sees them; feed does not know the merchant for its first few calls."""

    def __init__(self, feed_lag_calls: int = 2) -> None:
        self.merchants: dict[str, dict[str, str]] = {}
        self.products: dict[str, dict[str, object]] = {}
        self.tweets: list[dict[str, object]] = []
        self.calls: Counter[tuple[str, str]] = Counter()
        self.feed_lag_calls = feed_lag_calls

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.calls[(request.url.host, request.url.path)] += 1
        if request.url.path == "/merchants":
            if body["handle"] in self.merchants:
                return httpx.Response(409, json={"error": "handle_taken"})
            merchant = {"id": str(uuid.uuid4()), "handle": body["handle"], "name": body["name"], "api_key": "key-1"}
            self.merchants[body["handle"]] = merchant
            return httpx.Response(201, json=merchant)
        if request.headers.get("Authorization") != "Bearer key-1":
            return httpx.Response(401, json={"error": "unauthorized"})
        if request.url.path == "/products":
            product = {"id": str(uuid.uuid4()), **body}
            self.products[str(product["id"])] = product
            return httpx.Response(201, json=product)
        if request.url.path == "/tweets":
            if self.feed_lag_calls > 0:
                self.feed_lag_calls -= 1
                # feed has not read the merchant from catalog's topics yet: it asks to be asked again.
                return httpx.Response(503, json={"error": "merchant_not_yet_known"}, headers={"Retry-After": "0"})
            tweet = {"id": str(uuid.uuid4()), "buyable": "product_id" in body, **body}
            self.tweets.append(tweet)
            return httpx.Response(201, json=tweet)
        return httpx.Response(404)


def test_seed_creates_products_and_tweets_and_waits_for_feed_to_catch_up(tmp_path: Path) -> None:
    shop = FakeShop(feed_lag_calls=2)
    state_file = tmp_path / "seed.json"

    result = seed(CATALOG, FEED, state_file, say=lambda _: None, transport=shop.transport())

    assert result is not None and result.complete
    assert [p["title"] for p in shop.products.values()] == [title for title, *_ in PRODUCTS]
    assert all(p["currency"] == "EUR" and isinstance(p["price_minor"], int) for p in shop.products.values())
    assert [t["buyable"] for t in shop.tweets] == [True] * len(PRODUCTS) + [False]
    assert result.buyable_tweets[0] == {"tweet_id": shop.tweets[0]["id"], "product_id": result.product_ids[0]}
    assert load_seed(state_file) == result


def test_a_second_seed_creates_nothing(tmp_path: Path) -> None:
    shop = FakeShop(feed_lag_calls=0)
    state_file = tmp_path / "seed.json"
    seed(CATALOG, FEED, state_file, say=lambda _: None, transport=shop.transport())
    messages: list[str] = []

    again = seed(CATALOG, FEED, state_file, say=messages.append, transport=shop.transport())

    assert again is None
    assert len(shop.products) == len(PRODUCTS) and len(shop.tweets) == len(PRODUCTS) + 1
    assert any("already exists" in m for m in messages)


def test_an_interrupted_seed_is_finished_without_duplicates(tmp_path: Path) -> None:
    shop = FakeShop(feed_lag_calls=0)
    state_file = tmp_path / "seed.json"
    seed(CATALOG, FEED, state_file, say=lambda _: None, transport=shop.transport())
    # As if the first run had stopped after two products and one tweet.
    full = load_seed(state_file)
    assert full is not None
    partial = SeedResult(
        full.merchant_id,
        full.merchant_handle,
        full.api_key,
        product_ids=full.product_ids[:2],
        tweet_ids=full.tweet_ids[:1],
        buyable_tweets=full.buyable_tweets[:1],
    )
    state_file.write_text(json.dumps(partial.__dict__))
    shop.calls.clear()

    finished = seed(CATALOG, FEED, state_file, say=lambda _: None, transport=shop.transport())

    assert finished is not None and finished.complete
    assert shop.calls[("catalog.test", "/products")] == len(PRODUCTS) - 2
    assert shop.calls[("feed.test", "/tweets")] == len(PRODUCTS) - 1 + 1  # the missing buyable ones, the plain one
    assert finished.product_ids[:2] == full.product_ids[:2]
    assert len(set(finished.product_ids)) == len(PRODUCTS)


def test_the_printed_curl_buys_the_first_buyable_tweet(tmp_path: Path) -> None:
    shop = FakeShop(feed_lag_calls=0)
    result = seed(CATALOG, FEED, tmp_path / "seed.json", say=lambda _: None, transport=shop.transport())
    assert result is not None

    words = shlex.split(buy_curl(result).replace("\\\n", " "))

    assert words[:5] == ["curl", "-sS", "-X", "POST", "http://localhost:8003/orders"]
    headers = [words[i + 1] for i, w in enumerate(words) if w == "-H"]
    assert any(h.startswith("Idempotency-Key: ") for h in headers)
    body = json.loads(words[words.index("-d") + 1])
    assert (body["tweet_id"], body["product_id"]) == (shop.tweets[0]["id"], result.product_ids[0])
    assert body["quantity"] == 1 and body["payment_method"] == "pm_card_visa"
    assert set(body["shipping"]) == {"name", "line1", "city", "country", "lat", "lon"}
    assert set(body["buyer"]) == {"id", "email"}


def test_a_request_is_sent_again_only_when_a_503_asks_for_it_with_retry_after_in_time() -> None:
    retry = httpx.Response(503, json={"error": "merchant_not_yet_known"}, headers={"Retry-After": "0"})
    answers = iter([retry, retry, httpx.Response(201, json={})])
    assert following_retry_after(lambda: next(answers), timeout=5).status_code == 201
    for final in (
        httpx.Response(404, json={"error": "unknown_merchant"}),
        httpx.Response(409, json={"error": "product_not_on_sale"}),
        httpx.Response(503, json={"error": "unavailable"}),  # no Retry-After: not a "not yet"
        httpx.Response(503, headers={"Retry-After": b"\xb2"}),  # not a number of seconds (latin-1 "²")
        httpx.Response(503, headers={"Retry-After": "3600"}),  # longer than the caller waits
    ):
        sent: list[httpx.Response] = []

        def send(final: httpx.Response = final, sent: list[httpx.Response] = sent) -> httpx.Response:
            sent.append(final)
            return final

        assert following_retry_after(send, timeout=5) is final and len(sent) == 1
