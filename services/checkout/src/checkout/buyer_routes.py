"""checkout's buyer-account routes (``/buyers``): wired by ``main.create_app`` like its other routes.

A buyer account has no password: ``POST /buyers`` answers a credential once; another device gets its own with a
one-time code from ``POST /buyers/me/link-codes``; ``POST /buyers/me/sign-out-everywhere`` revokes them all.
No credential: 401; an unknown or revoked one: 401; another buyer's order: 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Query, status
from tweetshop_platform import ratelimit
from tweetshop_platform.openapi import BearerCredential
from tweetshop_platform.runtime import ServiceRuntime

from .api import OrderOut
from .buyer_api import BuyerOut, BuyerSignedIn, LinkCodeOut, LinkIn, MyOrdersOut, SignedOut
from .config import CheckoutSettings
from .usecases import buyers

_REFUSALS = {
    401: "No credential, or an unknown or revoked one (`invalid_buyer_credential`): send "
    "`Authorization: Bearer <buyer credential>`",
    404: "Another buyer's order (or no such order): whether it exists is private to its buyer",
}
_DESCRIPTION = (
    "The buyer credential (`tsb_...`), answered once by `POST /buyers` (or `POST /buyers/link` on another device) "
    "and stored only as its SHA-256: the buyer's own orders and account. `POST /buyers/me/sign-out-everywhere` "
    "revokes every credential of the buyer."
)
BUYER_CREDENTIAL = BearerCredential("buyerCredential", _DESCRIPTION, _REFUSALS)
# POST /orders: with it, the order belongs to the buyer; without any credential, an anonymous order as before.
BUYER_CREDENTIAL_OPTIONAL = BearerCredential("buyerCredential", _DESCRIPTION, _REFUSALS, required=False, anonymous=True)

Credential = Annotated[str, Depends(BUYER_CREDENTIAL)]

_LINK_ODDS = (
    "A code is 8 characters from a 32-symbol alphabet (40 bits), lives 10 minutes, is used once, and 5 wrong "
    "guesses at its first 4 characters burn it; every way a code fails answers the same 401. Each guess finds "
    "some live code with probability (live codes) / 2**40. This route counts against the `signups` limit (20 per "
    "hour per client by default: 480 guesses a day per address), and all wrong guesses together against "
    "`link_code_failures_limit` (600 per hour per process by default, then 429 `link_codes_paused` for everyone). "
    "With 1,000 codes live at every moment, a month of guessing at the global cap finds one with probability "
    "about 4 in 10,000; one given code (alive 10 minutes: at most 100 guesses at the cap) about 1 in 10 billion. "
    "Several replicas multiply both by their number."
)


def install(app: FastAPI, runtime: ServiceRuntime, settings: CheckoutSettings) -> None:
    """The ``/buyers`` routes, and their rate limits (creating a buyer and linking count as sign-ups)."""
    link_guard = buyers.LinkGuard(settings.link_code_failures_limit)

    def buyer_out(account: buyers.Account) -> BuyerOut:
        return BuyerOut(id=account.id, created_at=account.created_at, devices=account.devices)

    @app.post(
        "/buyers",
        operation_id="createBuyer",
        status_code=status.HTTP_201_CREATED,
        response_model=BuyerSignedIn,
        tags=["buyers"],
        summary="A new buyer account (no password): its credential, answered once",
        responses={429: {"description": "Too many sign-ups from this client (`signups` limit)"}},
    )
    async def create_buyer() -> BuyerSignedIn:
        issued = await buyers.create_buyer(runtime.pool)
        return BuyerSignedIn(buyer=buyer_out(issued.account), credential=issued.credential)

    @app.get(
        "/buyers/me",
        operation_id="getCurrentBuyer",
        response_model=BuyerOut,
        tags=["buyers"],
        summary="The buyer this credential stands for",
        responses={401: {"description": _REFUSALS[401]}},
    )
    async def current_buyer(credential: Credential) -> BuyerOut:
        return buyer_out(await buyers.authenticate_pool(runtime.pool, credential))

    @app.get(
        "/buyers/me/orders",
        operation_id="listMyOrders",
        response_model=MyOrdersOut,
        tags=["buyers"],
        summary="The buyer's orders, newest first (placed with one of the buyer's credentials)",
        responses={
            401: {"description": _REFUSALS[401]},
            422: {"description": "A cursor that is not a `next_cursor` (`invalid_cursor`), or a limit out of range"},
        },
    )
    async def my_orders(
        credential: Credential,
        limit: Annotated[int, Query(ge=1, le=100, description="Orders per page")] = 20,
        cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    ) -> MyOrdersOut:
        page, next_cursor = await buyers.orders_page(runtime.pool, credential, limit=limit, cursor=cursor)
        return MyOrdersOut(
            orders=[
                OrderOut.of(order, access_token=token, tracking_base_url=settings.tracking_public_url)
                for order, token in page
            ],
            next_cursor=next_cursor,
        )

    @app.post(
        "/buyers/me/link-codes",
        operation_id="createLinkCode",
        status_code=status.HTTP_201_CREATED,
        response_model=LinkCodeOut,
        tags=["buyers"],
        summary="A one-time code to sign another device in to this account (replaces the previous code)",
        responses={
            401: {"description": _REFUSALS[401]},
            503: {"description": "No code could be drawn right now (`link_code_unavailable`); try again"},
        },
    )
    async def create_link_code(credential: Credential) -> LinkCodeOut:
        code = await buyers.new_link_code(runtime.pool, credential)
        return LinkCodeOut(code=code.display, expires_at=code.expires_at)

    @app.post(
        "/buyers/link",
        operation_id="linkDevice",
        status_code=status.HTTP_201_CREATED,
        response_model=BuyerSignedIn,
        tags=["buyers"],
        summary="Trade a link code for a credential of the same buyer (this device is then signed in)",
        description=_LINK_ODDS,
        responses={
            401: {"description": "The code is wrong, expired, used or burnt (`invalid_link_code`)"},
            422: {"description": "Not the shape of a code (`invalid_link_code`)"},
            429: {
                "description": "Too many attempts from this client (`signups` limit), or too many wrong codes from "
                "everyone lately (`link_codes_paused`)"
            },
        },
    )
    async def link_device(body: LinkIn) -> BuyerSignedIn:
        issued = await buyers.link_device(runtime.pool, body.code, link_guard)
        return BuyerSignedIn(buyer=buyer_out(issued.account), credential=issued.credential)

    @app.post(
        "/buyers/me/sign-out-everywhere",
        operation_id="signOutEverywhere",
        response_model=SignedOut,
        tags=["buyers"],
        summary="Revoke every credential of the buyer (every device, this one too) and the live link code",
        responses={401: {"description": _REFUSALS[401]}},
    )
    async def sign_out_everywhere(credential: Credential) -> SignedOut:
        return SignedOut(revoked=await buyers.sign_out_everywhere(runtime.pool, credential))

    ratelimit.limit_routes(app, {"POST /buyers": ratelimit.SIGNUPS, "POST /buyers/link": ratelimit.SIGNUPS})
