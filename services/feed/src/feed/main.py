"""feed: tweets and the timeline. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import FastAPI, Query, Request, status
from tweetshop_contracts import topics
from tweetshop_platform.auth import bearer_token
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import handlers, service
from .api import TimelineOut, TweetIn, TweetOut
from .config import FeedSettings


def create_app(settings: FeedSettings | None = None) -> FastAPI:
    """The feed service: HTTP API plus its read-model consumers and outbox relay."""
    settings = settings or FeedSettings()
    runtime = ServiceRuntime(settings, package="feed", produces=(topics.FEED_BUYABLE_TWEETS,))
    runtime.subscribe(topics.CATALOG_MERCHANTS, handlers.on_merchant_event, group="merchants")
    runtime.subscribe(topics.CATALOG_PRODUCTS, handlers.on_product_event, group="products")
    app = create_service_app(
        runtime,
        title="tweetshop feed",
        description=(
            "Merchants' tweets and the buyers' timeline. A tweet that carries a product is buyable "
            "(announced on feed.buyable-tweets.v1); its card shows the product's live price and stock, "
            "kept from catalog.products.v1 and catalog.merchants.v1."
        ),
    )

    @app.post("/tweets", status_code=status.HTTP_201_CREATED, response_model=TweetOut, tags=["tweets"])
    async def post_tweet(body: TweetIn, request: Request) -> TweetOut:
        view = await service.post_tweet(
            runtime.pool,
            bearer_token(request),
            body.merchant_id,
            body.text,
            body.product_id,
            str(request.state.correlation_id),
        )
        return TweetOut.of(view)

    @app.get("/tweets/{tweet_id}", response_model=TweetOut, tags=["tweets"])
    async def get_tweet(tweet_id: uuid.UUID) -> TweetOut:
        return TweetOut.of(await service.get_tweet(runtime.pool, tweet_id))

    @app.get("/timeline", response_model=TimelineOut, tags=["timeline"], summary="Tweets, newest first")
    async def timeline(
        limit: Annotated[int, Query(ge=1, le=100, description="Tweets per page")] = 20,
        cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
        merchant_id: Annotated[uuid.UUID | None, Query(description="Only this merchant's tweets")] = None,
    ) -> TimelineOut:
        views, next_cursor = await service.timeline_page(
            runtime.pool, limit=limit, cursor=cursor, merchant_id=merchant_id
        )
        return TimelineOut(tweets=[TweetOut.of(v) for v in views], next_cursor=next_cursor)

    return app
