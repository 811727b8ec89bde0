"""feed: tweets and the timeline. The only wiring: HTTP routes, subscriptions, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response, status
from fastapi.responses import JSONResponse
from tweetshop_platform.http import error_body
from tweetshop_platform.openapi import MERCHANT_API_KEY, BearerCredential
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


# A buyer account's credential (checkout's `tsb_...`): its follows and followed timeline. Optional: the anonymous
# buyer ids of before accounts still work without one (never an account's id, `ba_...`).
BUYER_CREDENTIAL = BearerCredential(
    "buyerCredential",
    "checkout's buyer credential (`tsb_...`), answered by its `POST /buyers` or `POST /buyers/link`; feed checks it "
    "against the hashes checkout publishes on checkout.buyers.v1. Needed for a buyer account's follows "
    "(`ba_...`); the anonymous buyer ids of before accounts work without it.",
    {
        401: "An account's buyer id without its credential (`buyer_credential_required`), or an unknown, revoked or "
        "deleted credential (`invalid_buyer_credential`)",
        404: "Another buyer account's id (`buyer_not_found`): whether it exists is private",
    },
    required=False,
    anonymous=True,
)
BuyerCredential = Annotated[str | None, Depends(BUYER_CREDENTIAL)]
NOT_YET_KNOWN_CREDENTIAL_DOC: dict[str, Any] = {
    **NOT_YET_KNOWN_DOC,
    "description": "A buyer credential checkout issued moments ago that feed has not read yet "
    "(`buyer_credential_not_yet_known`), or a merchant not read yet (`merchant_not_yet_known`): send the same "
    "request again after Retry-After seconds",
}
_BUYER_REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": BUYER_CREDENTIAL.refusals[401]},
    404: {"description": BUYER_CREDENTIAL.refusals[404]},
    503: NOT_YET_KNOWN_CREDENTIAL_DOC,
}


def create_app(settings: FeedSettings | None = None) -> FastAPI:
    """The feed service: HTTP API plus its read-model consumers and outbox relay."""
    settings = settings or FeedSettings()
    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime = ServiceRuntime(settings, package="feed")
    runtime.subscribe_declared(
        {
            "merchants": handlers.on_merchant_event,
            "products": handlers.on_product_event,
            "buyers": handlers.on_buyer_event,
        }
    )
    app = create_service_app(
        runtime,
        title="tweetshop feed",
        description=(
            "Merchants' tweets and the buyers' timeline (everyone's, or the followed merchants' with "
            "`?buyer_id=`; buyers follow merchants through /follows, a buyer account with its credential). A tweet "
            "that carries a product is buyable (announced on feed.buyable-tweets.v1); its card shows the product's "
            "live price and stock, kept from catalog.products.v1 and catalog.merchants.v1."
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
        responses=_BUYER_REFUSALS,
    )
    async def timeline(
        credential: BuyerCredential,
        limit: Annotated[int, Query(ge=1, le=100, description="Tweets per page")] = 20,
        cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
        merchant_id: Annotated[uuid.UUID | None, Query(description="Only this merchant's tweets")] = None,
        buyer_id: Annotated[
            str | None,
            Query(
                max_length=200,
                description="Only the tweets of the merchants this buyer follows (a buyer account's own id, or "
                "any id, with its credential; an anonymous id without one)",
                json_schema_extra=BUYER_ID_DOC,
            ),
        ] = None,
    ) -> TimelineOut:
        views, next_cursor = await service.timeline_page(
            runtime.pool,
            limit=limit,
            cursor=cursor,
            merchant_id=merchant_id,
            buyer_id=buyer_id,
            credential=credential,
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
            401: {"description": BUYER_CREDENTIAL.refusals[401]},
            404: {"description": f"Unknown merchant (`unknown_merchant`). {BUYER_CREDENTIAL.refusals[404]}"},
            503: NOT_YET_KNOWN_CREDENTIAL_DOC,
        },
    )
    async def follow(body: FollowIn, response: Response, credential: BuyerCredential) -> FollowOut:
        found, created = await service.follow(runtime.pool, body.buyer_id, body.merchant_id, credential)
        if not created:
            response.status_code = status.HTTP_200_OK
        return FollowOut.of(found)

    @app.delete(
        "/follows",
        operation_id="unfollowMerchant",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["follows"],
        summary="A buyer stops following a merchant (204 also when it did not follow it)",
        responses=_BUYER_REFUSALS,
    )
    async def unfollow(
        merchant_id: Annotated[uuid.UUID, Query()],
        credential: BuyerCredential,
        buyer_id: Annotated[str | None, Query(max_length=200, json_schema_extra=BUYER_ID_DOC)] = None,
    ) -> Response:
        await service.unfollow(runtime.pool, buyer_id, merchant_id, credential)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get(
        "/follows",
        operation_id="listFollowing",
        response_model=FollowingOut,
        tags=["follows"],
        summary="The merchants a buyer follows",
        responses=_BUYER_REFUSALS,
    )
    async def following(
        credential: BuyerCredential,
        buyer_id: Annotated[str | None, Query(max_length=200, json_schema_extra=BUYER_ID_DOC)] = None,
    ) -> FollowingOut:
        buyer_id, follows = await service.following(runtime.pool, buyer_id, credential)
        return FollowingOut(buyer_id=buyer_id, following=[FollowOut.of(f) for f in follows])

    return app
