"""The returning buyer: time-to-paid of a purchase with a saved card, beside the same buyer's first purchase.

Each of ``buyers`` new buyers makes an account (``POST /buyers``), buys once with a fresh card and
``save_card`` (checkout makes the buyer's Stripe Customer and keeps the card on it), reads the saved card back
(``GET /buyers/me/cards``) and buys again with it -- the one-tap purchase. Each time runs, as the load steps'
do, from just before the ``POST /orders`` to the moment its ``OrderPaid`` reaches our consumer of
``checkout.orders.v1``. A few buyers at a time: this measures one buyer's wait, not a load.

Only against the payment stand-in (``bench.common.stripe_standin``), which answers Customers and
PaymentMethods as Stripe does; the buyer's Stripe calls (the card asked of Stripe, the Customer made, the card
attached) are on the first purchase's path, so the two times differ by what saving and reusing a card costs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tweetshop_devstack.seed import order_body

from bench.common.stack import Seeded
from bench.common.stats import Latency
from bench.common.watch import OrderTimes

FRESH_CARD = "pm_card_visa"  # Stripe's test token: a new card, on no Customer
AT_ONCE = 4  # buyers going through their two purchases at the same time
PAID_WITHIN_S = 60.0


@dataclass
class ReturningResult:
    """What the phase measured: per buyer, the first order and the returning one, and what went wrong."""

    buyers: int
    first: dict[str, float] = field(default_factory=dict)  # order id → when its POST started
    returning: dict[str, float] = field(default_factory=dict)
    saved_cards: int = 0  # buyers whose saved card was listed back (exactly one each)
    errors: list[str] = field(default_factory=list)

    def as_dict(self, times: OrderTimes) -> dict[str, Any]:
        """JSON: counts, and p50/p99 POST→OrderPaid for the first and the returning purchases."""
        out: dict[str, Any] = {"buyers": self.buyers, "saved_cards": self.saved_cards, "errors": self.errors[:20]}
        for name, orders in (("first", self.first), ("returning", self.returning)):
            paid = [times.paid[o][0] - started for o, started in orders.items() if times.paid.get(o)]
            out[name] = {
                "placed": len(orders),
                "paid": sum(1 for o in orders if times.paid.get(o)),
                "paid_once": sum(1 for o in orders if len(times.paid.get(o) or ()) == 1),
                "one_payment_intent": sum(1 for o in orders if len(times.intents.get(o) or ()) == 1),
                "to_order_paid": Latency.of_seconds(paid).as_dict(),
            }
        return out


async def _wait_paid(times: OrderTimes, order_id: str) -> bool:
    deadline = time.monotonic() + PAID_WITHIN_S
    while not times.paid.get(order_id):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def returning_buyers(checkout_url: str, seeded: Seeded, times: OrderTimes, buyers: int) -> ReturningResult:
    """``buyers`` buyers, each: an account, a first purchase saving the card, a second one with the saved card."""
    base = checkout_url.rstrip("/")
    result = ReturningResult(buyers=buyers)
    gate = asyncio.Semaphore(AT_ONCE)

    async def buy(session: aiohttp.ClientSession, bearer: str, body: dict[str, Any]) -> str | None:
        started = time.monotonic()
        headers = {"Authorization": bearer, "Idempotency-Key": f"bench-returning-{uuid.uuid4().hex}"}
        async with session.post(f"{base}/orders", json=body, headers=headers) as response:
            if response.status != 202:
                result.errors.append(f"POST /orders: HTTP {response.status}: {(await response.text())[:120]}")
                return None
            order_id = str((await response.json())["id"])
        (result.returning if body["payment_method"] != FRESH_CARD else result.first)[order_id] = started
        if not await _wait_paid(times, order_id):
            result.errors.append(f"order {order_id} not paid within {PAID_WITHIN_S:g} s")
            return None
        return order_id

    async def one_buyer(session: aiohttp.ClientSession) -> None:
        async with gate:
            try:
                await both_purchases(session)
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.errors.append(type(exc).__name__)

    async def both_purchases(session: aiohttp.ClientSession) -> None:
        async with session.post(f"{base}/buyers") as response:
            if response.status != 201:
                result.errors.append(f"POST /buyers: HTTP {response.status}")
                return
            signed_in = await response.json()
        bearer = f"Bearer {signed_in['credential']}"
        # The body's buyer id is ignored for a signed-in buyer (the account's is used): any will do.
        body = order_body(seeded.tweet_id, seeded.product_id, buyer_id="bench-returning", payment_method=FRESH_CARD)
        if await buy(session, bearer, {**body, "save_card": True}) is None:
            return
        async with session.get(f"{base}/buyers/me/cards", headers={"Authorization": bearer}) as response:
            saved = (await response.json()).get("cards") if response.status == 200 else None
        if not saved or len(saved) != 1:
            result.errors.append(f"GET /buyers/me/cards: HTTP {response.status}, {len(saved or [])} cards")
            return
        result.saved_cards += 1
        await buy(session, bearer, {**body, "payment_method": saved[0]["id"]})

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60.0)) as session:
        await asyncio.gather(*(one_buyer(session) for _ in range(buyers)))
    return result
