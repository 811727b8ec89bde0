"""feed: tweets and the timeline. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from tweetshop_platform.http import error_body
from tweetshop_platform.openapi import MERCHANT_API_KEY
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import domain, handlers, service
from .api import FollowIn, FollowingOut, FollowOut, TimelineOut, TweetIn, TweetOut
from .config import FeedSettings

# Documented only: the service checks it itself (domain.check_buyer_id answers 422 invalid_buyer_id).
BUYER_ID_DOC: dict[str, Any] = {"pattern": domain.BUYER_ID_PATTERN}

# The answer for a merchant or product catalog created moments ago that feed has not read yet (domain.NotYetKnown).
NOT_YET_KNOWN_DOC: dict[str, Any] = {
    "description": "Created moments ago and not read by feed from catalog's topics yet "
    "(`merchant_not_yet_known`, `product_not_yet_known`): send the same request again after Retry-After seconds",
    "headers": {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
}


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

    @app.exception_handler(domain.NotYetKnown)
    async def on_not_yet_known(_: Request, exc: domain.NotYetKnown) -> JSONResponse:
        """503 with Retry-After: a client (the web app, curl --retry) sends the request again after it."""
        return JSONResponse(
            error_body(exc.code, exc.message, **exc.details),
            status_code=exc.status,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.post(
        "/tweets",
        operation_id="postTweet",
        status_code=status.HTTP_201_CREATED,
        response_model=TweetOut,
        tags=["tweets"],
        responses={
            404: {"description": "Unknown merchant or product (`unknown_merchant`, `unknown_product`)"},
            409: {"description": "The product is no longer on sale (`product_not_on_sale`)"},
            503: NOT_YET_KNOWN_DOC,
        },
    )
    async def post_tweet(
        body: TweetIn, request: Request, api_key: Annotated[str, Depends(MERCHANT_API_KEY)]
    ) -> TweetOut:
        view = await service.post_tweet(
            runtime.pool,
            api_key,
            body.merchant_id,
            body.text,
            body.product_id,
            str(request.state.correlation_id),
        )
        return TweetOut.of(view)

    @app.get(
        "/tweets/{tweet_id}",
        operation_id="getTweet",
        response_model=TweetOut,
        tags=["tweets"],
        responses={404: {"description": "No such tweet"}},
    )
    async def get_tweet(tweet_id: uuid.UUID) -> TweetOut:
        return TweetOut.of(await service.get_tweet(runtime.pool, tweet_id))

    @app.get(
        "/timeline",
        operation_id="getTimeline",
        response_model=TimelineOut,
        tags=["timeline"],
        summary="Tweets, newest first",
    )
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
        operation_id="followMerchant",
        status_code=status.HTTP_201_CREATED,
        response_model=FollowOut,
        tags=["follows"],
        summary="A buyer follows a merchant",
        responses={
            200: {"description": "The buyer already followed this merchant"},
            404: {"description": "Unknown merchant (`unknown_merchant`)"},
            503: NOT_YET_KNOWN_DOC,
        },
    )
    async def follow(body: FollowIn, response: Response) -> FollowOut:
        found, created = await service.follow(runtime.pool, body.buyer_id, body.merchant_id)
        if not created:
            response.status_code = status.HTTP_200_OK
        return FollowOut.of(found)

    @app.delete(
        "/follows",
        operation_id="unfollowMerchant",
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

    @app.get(
        "/follows",
        operation_id="listFollowing",
        response_model=FollowingOut,
        tags=["follows"],
        summary="The merchants a buyer follows",
    )
    async def following(
        buyer_id: Annotated[str, Query(max_length=200, json_schema_extra=BUYER_ID_DOC)],
    ) -> FollowingOut:
        follows = await service.following(runtime.pool, buyer_id)
        return FollowingOut(buyer_id=buyer_id, following=[FollowOut.of(f) for f in follows])

    return app
