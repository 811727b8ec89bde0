"""feed: tweets and the timeline. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response, status
from tweetshop_platform.auth import bearer_token
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import domain, handlers, service
from .api import FollowIn, FollowingOut, FollowOut, TimelineOut, TweetIn, TweetOut
from .config import FeedSettings

# Documented only: the service checks it itself (domain.check_buyer_id answers 422 invalid_buyer_id).
BUYER_ID_DOC: dict[str, Any] = {"pattern": domain.BUYER_ID_PATTERN}


def create_app(settings: FeedSettings | None = None) -> FastAPI:
    """The feed service: HTTP API plus its read-model consumers and outbox relay."""
    settings = settings or FeedSettings()
    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime = ServiceRuntime(settings, package="feed")
    runtime.subscribe_declared({"merchants": handlers.on_merchant_event, "products": handlers.on_product_event})
    app = create_service_app(
        runtime,
        title="tweetshop feed",
        description=(
            "Merchants' tweets and the buyers' timeline (everyone's, or the followed merchants' with "
            "`?buyer_id=`; buyers follow merchants through /follows). A tweet that carries a product is buyable "
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
        buyer_id: Annotated[
            str | None,
            Query(
                max_length=200,
                description="Only the tweets of the merchants this buyer follows",
                json_schema_extra=BUYER_ID_DOC,
            ),
        ] = None,
    ) -> TimelineOut:
        views, next_cursor = await service.timeline_page(
            runtime.pool, limit=limit, cursor=cursor, merchant_id=merchant_id, buyer_id=buyer_id
        )
        return TimelineOut(tweets=[TweetOut.of(v) for v in views], next_cursor=next_cursor)

    @app.post(
        "/follows",
        status_code=status.HTTP_201_CREATED,
        response_model=FollowOut,
        tags=["follows"],
        summary="A buyer follows a merchant",
        responses={200: {"description": "The buyer already followed this merchant"}},
    )
    async def follow(body: FollowIn, response: Response) -> FollowOut:
        found, created = await service.follow(runtime.pool, body.buyer_id, body.merchant_id)
        if not created:
            response.status_code = status.HTTP_200_OK
        return FollowOut.of(found)

    @app.delete(
        "/follows",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["follows"],
        summary="A buyer stops following a merchant (204 also when it did not follow it)",
    )
    async def unfollow(
        buyer_id: Annotated[str, Query(max_length=200, json_schema_extra=BUYER_ID_DOC)],
        merchant_id: Annotated[uuid.UUID, Query()],
    ) -> Response:
        await service.unfollow(runtime.pool, buyer_id, merchant_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get("/follows", response_model=FollowingOut, tags=["follows"], summary="The merchants a buyer follows")
    async def following(
        buyer_id: Annotated[str, Query(max_length=200, json_schema_extra=BUYER_ID_DOC)],
    ) -> FollowingOut:
        follows = await service.following(runtime.pool, buyer_id)
        return FollowingOut(buyer_id=buyer_id, following=[FollowOut.of(f) for f in follows])

    return app
