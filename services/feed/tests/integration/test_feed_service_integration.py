"""feed against the real broker and a real Postgres: the test plays catalog on its topics and reads feed's own.

feed runs in this process (its FastAPI lifespan starts the runtime: migrations, consumers, outbox relay)
with its own database and topic namespace. Infrastructure comes from the devstack pytest plugin
(``kafka_bootstrap``, ``postgres_admin_dsn``, ``service_process``).
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from feed.config import FeedSettings
from feed.main import create_app
from pydantic import SecretStr
from tweetshop_contracts import (
    BuyableTweetPosted,
    BuyerCredentialIssued,
    BuyerCredentialsRevoked,
    BuyerDeleted,
    Envelope,
    MerchantApiKeyRotated,
    MerchantRegistered,
    ProductListed,
    ProductUpdated,
    decode_event,
    topics,
)
from tweetshop_devstack.pytest_plugin import RunningService, ServiceProcesses, dsn_with_database
from tweetshop_devstack.services import service_dsn
from tweetshop_devstack.testing import create_database, drop_database
from tweetshop_devstack.testing import eventually_async as eventually
from tweetshop_platform.auth import hash_secret
from tweetshop_platform.db import provision_service
from tweetshop_platform.settings import ServiceSettings
from uuid_utils import compat as uuid_utils

T = TypeVar("T")
PASSWORD = "feed-test-password"


@dataclass
class RunningFeed:
    """The feed app, an HTTP client to it, and a catalog stand-in that publishes to its topics."""

    client: httpx.AsyncClient
    namespace: str
    kafka_bootstrap: str
    producer: AIOKafkaProducer
    db: asyncpg.Connection

    async def publish(self, *events: Envelope) -> None:
        """Publish as catalog would: JSON value, aggregate key, event_type and correlation_id headers."""
        for event in events:
            await self.producer.send_and_wait(
                self.namespace + event.topic(),
                event.to_bytes(),
                key=event.key().encode(),
                headers=[(k, v.encode()) for k, v in event.headers().items()],
            )

    async def handled(self, event: Envelope) -> bool:
        """Whether feed has consumed ``event`` (its inbox has the event id)."""
        return bool(await self.db.fetchval("SELECT true FROM feed.inbox WHERE event_id = $1", event.event_id))

    async def next_on_topic(self, topic: str, match: Callable[[Envelope], bool], timeout: float = 20) -> Envelope:
        """The first event on ``topic`` (from its beginning) that ``match`` accepts."""
        consumer = AIOKafkaConsumer(
            self.namespace + topic,
            bootstrap_servers=self.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        event = decode_event(topic, record.value)
                        if match(event):
                            return event
            raise AssertionError(f"no matching event on {topic} within {timeout}s")
        finally:
            await consumer.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def feed(kafka_bootstrap: str, kafka_is_apache: bool, postgres_admin_dsn: str) -> AsyncIterator[RunningFeed]:
    """One feed per test module, with its own database and topic namespace."""
    suffix = uuid.uuid4().hex[:10]
    database = f"feed_it_{suffix}"
    await create_database(postgres_admin_dsn, database)
    database_admin_dsn = dsn_with_database(postgres_admin_dsn, database)
    await provision_service(database_admin_dsn, "feed", PASSWORD)
    settings = FeedSettings(
        environment="development",  # the development operator key: what the test fixtures run with
        database_url=SecretStr(service_dsn(database_admin_dsn, "feed", PASSWORD)),
        kafka_bootstrap_servers=kafka_bootstrap,
        kafka_enable_idempotence=kafka_is_apache,
        topic_namespace=f"feedit{suffix}.",
        kafka_topic_partitions=3,
        log_format="console",
        log_level="WARNING",
    )
    app = create_app(settings)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    db = await asyncpg.connect(database_admin_dsn)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://feed") as client:
                yield RunningFeed(client, settings.topic_namespace, kafka_bootstrap, producer, db)
    finally:
        await producer.stop()
        await db.close()
        await drop_database(postgres_admin_dsn, database)


def any_json(response: httpx.Response) -> Any:
    """The JSON body, with the response in the message when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise AssertionError(f"{response.status_code}: {response.text[:500]}") from exc


# --- catalog stand-in -----------------------------------------------------------------------

MERCHANT_KEY = "tsk_the-merchants-key"  # every merchant of these tests registers with it, unless told otherwise
AUTH = {"Authorization": f"Bearer {MERCHANT_KEY}"}


def product_state(
    merchant_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    version: int,
    price_minor: int = 1200,
    stock: int = 3,
    status: str = "active",
    listed: bool = False,
) -> ProductListed | ProductUpdated:
    """A product's full state as catalog publishes it."""
    cls = ProductListed if listed else ProductUpdated
    return cls.model_validate(
        {
            "producer": "catalog",
            "correlation_id": "feed-it",
            "product_id": product_id,
            "merchant_id": merchant_id,
            "title": "Fancy mug",
            "price_minor": price_minor,
            "currency": "EUR",
            "stock_available": stock,
            "status": status,
            "version": version,
        }
    )


async def known_merchant(feed: RunningFeed, handle: str = "fancy", key: str = MERCHANT_KEY) -> uuid.UUID:
    """A merchant registered at catalog whose event feed has consumed (only its key's hash travels)."""
    event = MerchantRegistered(
        producer="catalog",
        correlation_id="feed-it",
        merchant_id=uuid.uuid4(),
        handle=handle,
        name="Fancy Inc.",
        api_key_sha256=hash_secret(key),
    )
    await feed.publish(event)
    await eventually(lambda: feed.handled(event), what="MerchantRegistered to be consumed")
    return event.merchant_id


async def known_product(feed: RunningFeed, merchant_id: uuid.UUID, **state: Any) -> uuid.UUID:
    """A product listed at catalog whose event feed has consumed."""
    event = product_state(merchant_id, uuid.uuid4(), version=1, listed=True, **state)
    await feed.publish(event)
    await eventually(lambda: feed.handled(event), what="ProductListed to be consumed")
    return event.product_id


async def update_product(feed: RunningFeed, event: ProductListed | ProductUpdated) -> None:
    """Publish a product update and wait until feed has handled it (applied or skipped)."""
    await feed.publish(event)
    await eventually(lambda: feed.handled(event), what=f"{event.event_type} v{event.version} to be consumed")


async def post(feed: RunningFeed, body: dict[str, Any], headers: dict[str, str] = AUTH) -> httpx.Response:
    return await feed.client.post("/tweets", json=body, headers=headers)


async def timeline_of(feed: RunningFeed, merchant_id: uuid.UUID, **params: Any) -> Any:
    response = await feed.client.get("/timeline", params={"merchant_id": str(merchant_id), **params})
    assert response.status_code == 200, response.text
    return any_json(response)


async def card_of(feed: RunningFeed, merchant_id: uuid.UUID, tweet_id: str) -> Any:
    """The tweet as the timeline shows it now."""
    tweets = (await timeline_of(feed, merchant_id))["tweets"]
    return next(t for t in tweets if t["id"] == tweet_id)


# --- tests ----------------------------------------------------------------------------------


async def test_a_buyable_tweet_is_announced_on_its_topic_with_the_price_at_posting_time(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    product_id = await known_product(feed, merchant_id, price_minor=1200, stock=3)

    response = await post(feed, {"merchant_id": str(merchant_id), "text": "New mug!", "product_id": str(product_id)})

    assert response.status_code == 201, response.text
    tweet = any_json(response)
    assert tweet["buyable"] is True
    assert tweet["product"]["id"] == str(product_id)
    assert (tweet["product"]["price_minor"], tweet["product"]["currency"]) == (1200, "EUR")
    announced = await feed.next_on_topic(
        topics.FEED_BUYABLE_TWEETS, lambda e: isinstance(e, BuyableTweetPosted) and str(e.tweet_id) == tweet["id"]
    )
    assert isinstance(announced, BuyableTweetPosted)
    assert (announced.product_id, announced.merchant_id) == (product_id, merchant_id)
    assert (announced.price_minor, announced.currency, announced.text) == (1200, "EUR", "New mug!")
    assert announced.producer == "feed"


async def test_the_timeline_card_shows_a_price_change_and_a_sell_out_at_once(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed, handle="fancy_live")
    product_id = await known_product(feed, merchant_id, price_minor=1200, stock=3)
    tweet = any_json(
        await post(feed, {"merchant_id": str(merchant_id), "text": "Mugs!", "product_id": str(product_id)})
    )

    shown = await card_of(feed, merchant_id, tweet["id"])
    assert shown["merchant"] == {"id": str(merchant_id), "handle": "fancy_live", "name": "Fancy Inc."}
    assert shown["buyable"] is True
    assert (shown["product"]["price_minor"], shown["product"]["in_stock"]) == (1200, True)

    await update_product(feed, product_state(merchant_id, product_id, version=2, price_minor=900, stock=0))

    shown = await card_of(feed, merchant_id, tweet["id"])
    assert shown["product"]["price_minor"] == 900
    assert (shown["product"]["in_stock"], shown["product"]["stock_available"]) == (False, 0)
    assert shown["buyable"] is False and shown["product"]["buyable"] is False
    single = any_json(await feed.client.get(f"/tweets/{tweet['id']}"))
    assert single == shown


async def test_a_stale_product_update_does_not_win_over_a_newer_one(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    product_id = await known_product(feed, merchant_id, price_minor=1200, stock=3)
    tweet = any_json(
        await post(feed, {"merchant_id": str(merchant_id), "text": "Mugs!", "product_id": str(product_id)})
    )
    await update_product(feed, product_state(merchant_id, product_id, version=3, price_minor=900, stock=0))

    # A late copy of version 2, and a replay of version 1: both handled, neither shown.
    await update_product(feed, product_state(merchant_id, product_id, version=2, price_minor=1500, stock=7))
    await update_product(
        feed, product_state(merchant_id, product_id, version=1, price_minor=1200, stock=3, listed=True)
    )

    shown = await card_of(feed, merchant_id, tweet["id"])
    assert (shown["product"]["price_minor"], shown["product"]["stock_available"]) == (900, 0)
    assert shown["buyable"] is False


async def test_a_delisted_product_keeps_its_card_but_is_no_longer_buyable_nor_tweetable(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    product_id = await known_product(feed, merchant_id, stock=5)
    body = {"merchant_id": str(merchant_id), "text": "Last chance", "product_id": str(product_id)}
    tweet = any_json(await post(feed, body))

    await update_product(feed, product_state(merchant_id, product_id, version=2, stock=5, status="delisted"))

    shown = await card_of(feed, merchant_id, tweet["id"])
    assert shown["product"]["status"] == "delisted" and shown["product"]["in_stock"] is True
    assert shown["buyable"] is False
    refused = await post(feed, body)
    assert (refused.status_code, any_json(refused)["error"]) == (409, "product_not_on_sale")


async def test_a_product_listed_moments_ago_is_503_with_retry_after_until_its_event_arrives(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    # Catalog mints product ids as UUIDv7: this one says it was listed just now.
    listed = product_state(merchant_id, uuid_utils.uuid7(), version=1, listed=True)
    body = {"merchant_id": str(merchant_id), "text": "Soon", "product_id": str(listed.product_id)}

    refused = await post(feed, body)

    assert (refused.status_code, refused.headers.get("retry-after")) == (503, "1")
    assert any_json(refused)["error"] == "product_not_yet_known"
    assert "on its way" in any_json(refused)["message"]
    assert (await timeline_of(feed, merchant_id))["tweets"] == []
    await update_product(feed, listed)
    assert (await post(feed, body)).status_code == 201


async def test_an_unknown_product_that_is_not_new_is_404(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)

    refused = await post(feed, {"merchant_id": str(merchant_id), "text": "Soon", "product_id": str(uuid.uuid4())})

    assert (refused.status_code, any_json(refused)["error"]) == (404, "unknown_product")
    assert "retry-after" not in refused.headers


async def test_a_plain_tweet_is_not_buyable_and_has_no_card(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)

    response = await post(feed, {"merchant_id": str(merchant_id), "text": "Hello, followers"})

    assert response.status_code == 201
    tweet = any_json(response)
    assert (tweet["buyable"], tweet["product"]) == (False, None)
    assert (await card_of(feed, merchant_id, tweet["id"]))["text"] == "Hello, followers"


async def test_bad_input_is_refused_with_422_and_writes_nothing(feed: RunningFeed) -> None:
    merchant_id = str(await known_merchant(feed))
    for body in (
        {"merchant_id": merchant_id, "text": ""},
        {"merchant_id": merchant_id, "text": "   "},
        {"merchant_id": merchant_id, "text": "x" * 281},
        {"merchant_id": merchant_id, "text": "nul\u0000byte"},
        {"merchant_id": merchant_id, "text": "hi", "price_minor": 5},
        {"merchant_id": merchant_id, "text": "hi", "product_id": "not-a-uuid"},
        {"merchant_id": "fancy", "text": "hi"},
        {"text": "hi"},
    ):
        response = await post(feed, body)
        assert response.status_code == 422, (body, response.text)
        assert any_json(response)["error"] == "validation_error"
    broken = await feed.client.post(
        "/tweets", content=b"{not json", headers={**AUTH, "content-type": "application/json"}
    )
    assert broken.status_code == 422
    for params in ({"cursor": "garbage"}, {"limit": "0"}, {"limit": "101"}, {"merchant_id": "x"}):
        response = await feed.client.get("/timeline", params=params)
        assert response.status_code == 422, (params, response.text)
    assert (await feed.client.get("/tweets/not-a-uuid")).status_code == 422
    assert (await timeline_of(feed, uuid.UUID(merchant_id)))["tweets"] == []


async def test_posting_needs_a_bearer_token_and_a_known_merchant(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)

    anonymous = await post(feed, {"merchant_id": str(merchant_id), "text": "hi"}, headers={})
    stranger = await post(feed, {"merchant_id": str(uuid.uuid4()), "text": "hi"})

    assert (anonymous.status_code, any_json(anonymous)["error"]) == (401, "unauthorized")
    assert (stranger.status_code, any_json(stranger)["error"]) == (404, "unknown_merchant")
    assert (await timeline_of(feed, merchant_id))["tweets"] == []


async def test_a_merchant_cannot_tweet_another_merchants_product(feed: RunningFeed) -> None:
    owner = await known_merchant(feed)
    other = await known_merchant(feed, handle="other")
    product_id = await known_product(feed, owner)

    response = await post(feed, {"merchant_id": str(other), "text": "mine now", "product_id": str(product_id)})

    assert (response.status_code, any_json(response)["error"]) == (403, "product_of_another_merchant")


async def test_only_the_merchants_current_key_posts_as_it(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed, key="tsk_first")
    tweet = {"merchant_id": str(merchant_id), "text": "hello"}

    assert (await post(feed, tweet, headers={})).status_code == 401
    # Another merchant's genuine key (the shared test key) does not post as this one.
    someone_else = await post(feed, tweet)
    assert (someone_else.status_code, any_json(someone_else)["error"]) == (403, "forbidden")
    assert (await post(feed, tweet, headers={"Authorization": "Bearer tsk_first"})).status_code == 201

    rotated = MerchantApiKeyRotated(
        producer="catalog", correlation_id="rotate", merchant_id=merchant_id, api_key_sha256=hash_secret("tsk_second")
    )
    await feed.publish(rotated)
    await eventually(lambda: feed.handled(rotated), what="MerchantApiKeyRotated to be consumed")
    assert (await post(feed, tweet, headers={"Authorization": "Bearer tsk_first"})).status_code == 403
    assert (await post(feed, tweet, headers={"Authorization": "Bearer tsk_second"})).status_code == 201
    # A redelivered registration does not bring the old key back.
    replayed = MerchantRegistered(
        producer="catalog",
        correlation_id="feed-it",
        merchant_id=merchant_id,
        handle="fancy",
        name="Fancy Inc.",
        api_key_sha256=hash_secret("tsk_first"),
    )
    await feed.publish(replayed)
    await eventually(lambda: feed.handled(replayed), what="the replayed registration to be consumed")
    assert (await post(feed, tweet, headers={"Authorization": "Bearer tsk_first"})).status_code == 403
    assert len((await timeline_of(feed, merchant_id))["tweets"]) == 2


async def test_a_key_rotation_read_before_its_registration_is_kept_not_parked(feed: RunningFeed) -> None:
    merchant_id = uuid.uuid4()
    tweet = {"merchant_id": str(merchant_id), "text": "hello"}
    rotated = MerchantApiKeyRotated(
        producer="catalog", correlation_id="rotate", merchant_id=merchant_id, api_key_sha256=hash_secret("tsk_second")
    )

    await feed.publish(rotated)
    await eventually(lambda: feed.handled(rotated), what="the early MerchantApiKeyRotated to be consumed")
    # Known by its key only: not a merchant feed can post as, or follow, until its registration arrives.
    early = await post(feed, tweet, headers={"Authorization": "Bearer tsk_second"})
    assert (early.status_code, any_json(early)["error"]) == (404, "unknown_merchant")
    follow = await feed.client.post("/follows", json={"buyer_id": "buyer-early", "merchant_id": str(merchant_id)})
    assert follow.status_code == 404, follow.text

    registration = MerchantRegistered(
        producer="catalog",
        correlation_id="feed-it",
        merchant_id=merchant_id,
        handle="early_bird",
        name="Early Bird",
        api_key_sha256=hash_secret("tsk_first"),
    )
    await feed.publish(registration)
    await eventually(lambda: feed.handled(registration), what="the late MerchantRegistered to be consumed")
    # The registration's key is older than the rotation's: only the rotated key posts.
    assert (await post(feed, tweet, headers={"Authorization": "Bearer tsk_first"})).status_code == 403
    posted = await post(feed, tweet, headers={"Authorization": "Bearer tsk_second"})
    assert posted.status_code == 201, posted.text
    (shown,) = (await timeline_of(feed, merchant_id))["tweets"]
    assert shown["merchant"]["handle"] == "early_bird", shown


async def test_a_started_service_runs_with_its_collector_thresholds_and_its_start_up_objects_frozen(
    feed: RunningFeed,
) -> None:
    assert gc.get_threshold() == ServiceSettings.model_fields["gc_thresholds"].default == (50_000, 20, 10)
    assert gc.get_freeze_count() > 10_000  # the modules, the app and its clients, out of the collector's way


async def test_an_unknown_tweet_is_404(feed: RunningFeed) -> None:
    response = await feed.client.get(f"/tweets/{uuid.uuid4()}")
    assert (response.status_code, any_json(response)["error"]) == (404, "unknown_tweet")


async def test_the_timeline_pages_newest_first_with_a_cursor(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    posted = []
    for n in range(5):
        response = await post(feed, {"merchant_id": str(merchant_id), "text": f"tweet {n}"})
        posted.append(any_json(response)["id"])

    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = await timeline_of(feed, merchant_id, **params)
        pages += 1
        seen += [t["id"] for t in page["tweets"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]

    assert seen == list(reversed(posted))
    assert pages == 3


async def followed_timeline(feed: RunningFeed, buyer_id: str, **params: Any) -> list[str]:
    """The texts on a buyer's timeline of followed merchants, newest first (all pages)."""
    texts: list[str] = []
    query: dict[str, Any] = {"buyer_id": buyer_id, **params}
    while True:
        response = await feed.client.get("/timeline", params=query)
        assert response.status_code == 200, response.text
        page = any_json(response)
        texts += [t["text"] for t in page["tweets"]]
        if page["next_cursor"] is None:
            return texts
        query["cursor"] = page["next_cursor"]


async def test_a_buyers_timeline_shows_the_merchants_it_follows_newest_first(feed: RunningFeed) -> None:
    fancy = await known_merchant(feed, handle="fancy_follow")
    other = await known_merchant(feed, handle="other_follow")
    buyer = f"buyer-{uuid.uuid4()}"
    for merchant, text in ((fancy, "fancy 1"), (other, "other 1"), (fancy, "fancy 2"), (other, "other 2")):
        assert (await post(feed, {"merchant_id": str(merchant), "text": text})).status_code == 201

    assert await followed_timeline(feed, buyer) == [], "a buyer who follows nobody sees no tweets"
    followed = await feed.client.post("/follows", json={"buyer_id": buyer, "merchant_id": str(fancy)})
    assert followed.status_code == 201, followed.text
    assert any_json(followed)["merchant"] == {"id": str(fancy), "handle": "fancy_follow", "name": "Fancy Inc."}

    assert await followed_timeline(feed, buyer, limit=1) == ["fancy 2", "fancy 1"]
    await feed.client.post("/follows", json={"buyer_id": buyer, "merchant_id": str(other)})
    assert await followed_timeline(feed, buyer, limit=3) == ["other 2", "fancy 2", "other 1", "fancy 1"]

    unfollowed = await feed.client.delete("/follows", params={"buyer_id": buyer, "merchant_id": str(fancy)})
    assert unfollowed.status_code == 204
    assert await followed_timeline(feed, buyer) == ["other 2", "other 1"]
    everyone = [t["text"] for t in any_json(await feed.client.get("/timeline", params={"limit": 100}))["tweets"]]
    assert {"fancy 1", "fancy 2", "other 1", "other 2"} <= set(everyone), "without buyer_id: every tweet"


async def test_following_twice_is_one_follow_and_unfollowing_twice_is_harmless(feed: RunningFeed) -> None:
    fancy = await known_merchant(feed, handle="fancy_twice")
    buyer = f"buyer-{uuid.uuid4()}"
    body = {"buyer_id": buyer, "merchant_id": str(fancy)}

    first = await feed.client.post("/follows", json=body)
    again = await feed.client.post("/follows", json=body)

    assert (first.status_code, again.status_code) == (201, 200)
    assert any_json(first)["followed_at"] == any_json(again)["followed_at"]
    listed = any_json(await feed.client.get("/follows", params={"buyer_id": buyer}))
    assert listed["buyer_id"] == buyer
    assert [f["merchant"]["handle"] for f in listed["following"]] == ["fancy_twice"]
    for _ in range(2):
        response = await feed.client.delete("/follows", params=body)
        assert response.status_code == 204
    assert any_json(await feed.client.get("/follows", params={"buyer_id": buyer}))["following"] == []


async def test_following_an_unknown_merchant_or_with_a_bad_buyer_id_is_refused(feed: RunningFeed) -> None:
    fancy = str(await known_merchant(feed, handle="fancy_refuse"))

    unknown = await feed.client.post("/follows", json={"buyer_id": "buyer-1x", "merchant_id": str(uuid.uuid4())})
    assert (unknown.status_code, any_json(unknown)["error"]) == (404, "unknown_merchant")
    # One registered moments ago (its UUIDv7 says so) may still be on its way: retry, not unknown.
    early = await feed.client.post("/follows", json={"buyer_id": "buyer-1x", "merchant_id": str(uuid_utils.uuid7())})
    assert (early.status_code, early.headers.get("retry-after")) == (503, "1")
    assert any_json(early)["error"] == "merchant_not_yet_known"
    for body in (
        {"buyer_id": "", "merchant_id": fancy},
        {"buyer_id": "has space", "merchant_id": fancy},
        {"buyer_id": "x" * 201, "merchant_id": fancy},
        {"buyer_id": "ok-buyer", "merchant_id": "fancy"},
        {"buyer_id": "ok-buyer"},
        {"buyer_id": "ok-buyer", "merchant_id": fancy, "extra": 1},
    ):
        response = await feed.client.post("/follows", json=body)
        assert response.status_code == 422, (body, response.text)
    for params in (
        {"buyer_id": "has space"},
        {"buyer_id": "x" * 201},
        {"buyer_id": "ok-buyer", "merchant_id": fancy},
    ):
        response = await feed.client.get("/timeline", params=params)
        assert response.status_code == 422, (params, response.text)
    assert (await feed.client.delete("/follows", params={"buyer_id": "ok-buyer"})).status_code == 422
    assert (await feed.client.get("/follows", params={"buyer_id": "bad\tid"})).status_code == 422
    assert any_json(await feed.client.get("/follows", params={"buyer_id": "ok-buyer"}))["following"] == []


async def test_tweets_posted_are_counted_in_the_metrics(feed: RunningFeed) -> None:
    merchant_id = await known_merchant(feed)
    before = await posted_count(feed, "plain")

    await post(feed, {"merchant_id": str(merchant_id), "text": "counted"})

    assert await posted_count(feed, "plain") == before + 1


async def posted_count(feed: RunningFeed, kind: str) -> float:
    """The value of the tweets-posted counter as /metrics shows it (0 before the first tweet)."""
    sample = f'tweetshop_feed_tweets_posted_total{{kind="{kind}"}} '
    for line in (await feed.client.get("/metrics")).text.splitlines():
        if line.startswith(sample):
            return float(line[len(sample) :])
    return 0.0


def test_feed_runs_as_its_own_process_and_serves_the_common_surface(service_process: ServiceProcesses) -> None:
    running: RunningService = service_process.start("feed")

    with httpx.Client(base_url=running.base_url, timeout=5) as client:
        ready = client.get("/readyz")
        paths = client.get("/openapi.json").json()["paths"]
        empty = client.get("/timeline")
        anonymous = client.post("/tweets", json={"merchant_id": str(uuid.uuid4()), "text": "hi"})

    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    assert {"/tweets", "/tweets/{tweet_id}", "/timeline", "/follows", "/healthz", "/metrics"} <= set(paths)
    assert empty.json() == {"tweets": [], "next_cursor": None}
    assert anonymous.status_code == 401


# --- buyer accounts: follows by credential (checkout.buyers.v1) ------------------------------------------------


def credential(*, born_ms: int | None = None) -> str:
    """A buyer credential as checkout mints it: ``tsb_<birth, Unix ms, 12 hex>.<43 random characters>``; born an
    hour ago unless told (old enough that feed not knowing it means unknown, not "not yet")."""
    if born_ms is None:
        born_ms = int(time.time() * 1000) - 3_600_000
    return f"tsb_{born_ms:012x}.{secrets.token_urlsafe(32)}"


def as_buyer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def buyer_account(feed: RunningFeed) -> tuple[str, str]:
    """A buyer account checkout announced, and its credential: (buyer id, credential)."""
    buyer_id, token = f"ba_{uuid.uuid4().hex}", credential()
    await publish_consumed(feed, issued(buyer_id, token))
    return buyer_id, token


def issued(buyer_id: str, token: str) -> BuyerCredentialIssued:
    return BuyerCredentialIssued(
        producer="checkout", correlation_id="feed-it", buyer_id=buyer_id, credential_sha256=hash_secret(token)
    )


async def publish_consumed(feed: RunningFeed, *events: Envelope) -> None:
    await feed.publish(*events)
    for event in events:
        await eventually(lambda e=event: feed.handled(e), what=f"{event.event_type} to be consumed")  # type: ignore[misc]


async def test_a_buyer_accounts_follows_need_its_credential_and_another_buyer_gets_404(feed: RunningFeed) -> None:
    fancy = str(await known_merchant(feed, handle="acct"))
    ada, ada_token = await buyer_account(feed)
    bob, bob_token = await buyer_account(feed)

    created = await feed.client.post("/follows", json={"merchant_id": fancy}, headers=as_buyer(ada_token))
    assert created.status_code == 201, created.text
    assert any_json(created)["buyer_id"] == ada, "the credential names the buyer"
    own = await feed.client.post("/follows", json={"buyer_id": ada, "merchant_id": fancy}, headers=as_buyer(ada_token))
    assert own.status_code == 200, own.text

    # None: 401, whatever the route.
    anonymous = {
        "post": await feed.client.post("/follows", json={"buyer_id": ada, "merchant_id": fancy}),
        "list": await feed.client.get("/follows", params={"buyer_id": ada}),
        "delete": await feed.client.delete("/follows", params={"buyer_id": ada, "merchant_id": fancy}),
        "timeline": await feed.client.get("/timeline", params={"buyer_id": ada}),
        "nobody": await feed.client.get("/follows"),
    }
    for route, response in anonymous.items():
        assert response.status_code == 401, (route, response.text)
    assert any_json(anonymous["list"])["error"] == "buyer_credential_required"
    # Another buyer: 404, and nothing of ada's changes.
    bobs = {
        "post": await feed.client.post(
            "/follows", json={"buyer_id": ada, "merchant_id": fancy}, headers=as_buyer(bob_token)
        ),
        "list": await feed.client.get("/follows", params={"buyer_id": ada}, headers=as_buyer(bob_token)),
        "delete": await feed.client.delete(
            "/follows", params={"buyer_id": ada, "merchant_id": fancy}, headers=as_buyer(bob_token)
        ),
        "timeline": await feed.client.get("/timeline", params={"buyer_id": ada}, headers=as_buyer(bob_token)),
    }
    for route, response in bobs.items():
        assert response.status_code == 404, (route, response.text)
        assert any_json(response)["error"] == "buyer_not_found"
    # An unknown credential, or something else as a bearer: 401.
    for token in (credential(), "tsb_" + "x" * 43, MERCHANT_KEY):
        response = await feed.client.get("/follows", headers=as_buyer(token))
        assert response.status_code == 401 and any_json(response)["error"] == "invalid_buyer_credential", token

    # The right buyer: in, on every route.
    listed = await feed.client.get("/follows", headers=as_buyer(ada_token))
    assert listed.status_code == 200, listed.text
    assert any_json(listed)["buyer_id"] == ada
    assert [f["merchant"]["id"] for f in any_json(listed)["following"]] == [fancy]
    timeline = await feed.client.get("/timeline", params={"buyer_id": ada}, headers=as_buyer(ada_token))
    assert timeline.status_code == 200, timeline.text
    bob_sees = await feed.client.get("/follows", headers=as_buyer(bob_token))
    assert any_json(bob_sees) == {"buyer_id": bob, "following": []}
    gone = await feed.client.delete("/follows", params={"merchant_id": fancy}, headers=as_buyer(ada_token))
    assert gone.status_code == 204
    assert any_json(await feed.client.get("/follows", headers=as_buyer(ada_token)))["following"] == []


async def test_a_credential_issued_moments_ago_is_not_yet_known_then_works(feed: RunningFeed) -> None:
    fancy = str(await known_merchant(feed, handle="fresh"))
    buyer_id, token = f"ba_{uuid.uuid4().hex}", credential(born_ms=int(time.time() * 1000))

    early = await feed.client.post("/follows", json={"merchant_id": fancy}, headers=as_buyer(token))
    assert early.status_code == 503, early.text
    assert early.headers["retry-after"] == "1"
    assert any_json(early)["error"] == "buyer_credential_not_yet_known"

    await publish_consumed(feed, issued(buyer_id, token))
    later = await feed.client.post("/follows", json={"merchant_id": fancy}, headers=as_buyer(token))
    assert later.status_code == 201, later.text
    assert any_json(later)["buyer_id"] == buyer_id


async def test_revocations_and_deletions_win_whatever_order_the_events_arrive_in(feed: RunningFeed) -> None:
    fancy = str(await known_merchant(feed, handle="revoked"))
    ada, first = await buyer_account(feed)
    second, early_revoked = credential(), credential()
    await publish_consumed(feed, issued(ada, second))
    assert (await feed.client.get("/follows", headers=as_buyer(second))).status_code == 200

    # Signed out everywhere: both stop; a revocation read before its issue is kept, and the issue (or a replay of
    # one already revoked) changes nothing.
    await publish_consumed(
        feed,
        BuyerCredentialsRevoked(
            producer="checkout",
            correlation_id="feed-it",
            buyer_id=ada,
            credential_sha256s=[hash_secret(first), hash_secret(second), hash_secret(early_revoked)],
        ),
        issued(ada, early_revoked),
        issued(ada, first),
    )
    for token in (first, second, early_revoked):
        response = await feed.client.get("/follows", headers=as_buyer(token))
        assert response.status_code == 401, response.text

    # Deleted: the follows go, and a credential of the buyer read afterwards is refused.
    bob, bob_token = await buyer_account(feed)
    followed = await feed.client.post("/follows", json={"merchant_id": fancy}, headers=as_buyer(bob_token))
    assert followed.status_code == 201
    late = credential()
    await publish_consumed(
        feed, BuyerDeleted(producer="checkout", correlation_id="feed-it", buyer_id=bob), issued(bob, late)
    )
    for token in (bob_token, late):
        assert (await feed.client.get("/follows", headers=as_buyer(token))).status_code == 401
    assert await feed.db.fetchval("SELECT count(*) FROM feed.follows WHERE buyer_id = $1", bob) == 0
    assert await feed.db.fetchval("SELECT count(*) FROM feed.buyer_credentials WHERE buyer_id = $1", bob) == 0


async def test_anonymous_follows_keep_working_and_join_the_account_that_brings_their_id(feed: RunningFeed) -> None:
    fancy = str(await known_merchant(feed, handle="anon"))
    device = f"b_{uuid.uuid4()}"
    followed = await feed.client.post("/follows", json={"buyer_id": device, "merchant_id": fancy})
    assert followed.status_code == 201, "an id that is not an account's works without a credential, as before"
    assert [
        f["merchant"]["id"]
        for f in any_json(await feed.client.get("/follows", params={"buyer_id": device}))["following"]
    ] == [fancy]

    ada, token = await buyer_account(feed)
    adopted = await feed.client.get("/follows", params={"buyer_id": device}, headers=as_buyer(token))
    assert adopted.status_code == 200, adopted.text
    assert any_json(adopted)["buyer_id"] == ada
    assert [f["merchant"]["id"] for f in any_json(adopted)["following"]] == [fancy]
    assert any_json(await feed.client.get("/follows", params={"buyer_id": device}))["following"] == []
