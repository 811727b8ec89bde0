"""The buyers of a flash drop: each taps Buy once and follows its order until a definitive answer.

Open loop: buyer ``i`` is due at ``start + offsets[i]`` by the clock, whatever the answers do (a late
generator sends what is due at once and reports its lag). Each buyer has its own buyer id, card
(payment method id), address and ``Idempotency-Key``. Its answer is definitive when:

- the POST is refused with 409 ``insufficient_stock`` (sold out at the POST);
- its order is paid (``OrderPaid`` on ``checkout.orders.v1``, or the order page says ``paid``);
- its order is cancelled because catalog had no stock (``OrderCancelled`` with ``stock_reserved`` false):
  sold out later;
- its card is declined (``OrderPaymentFailed``, or the page says ``failed``);
- it is asked to authenticate (3-D Secure: the page says ``requires_action``; in the benchmark it never does).

Answers come from one consumer of ``checkout.orders.v1`` (as the orders benchmark watches it) and from the
order page: each accepted buyer loads ``GET /orders/{id}`` right after the POST and once more when the
answer comes from the topic, as a browser would show it. A buyer whose card needs 3-D Secure reloads its
page every ``three_ds_poll_s`` (no event says ``requires_action``: the page is the only way to learn it);
with ``poll_s`` > 0 every buyer reloads its page that often too (5,000 buyers reloading every second are
5,000 reads a second on checkout: the first run did that, and its pages took seconds). Every request's
latency and status is kept: the order page's p99 and the count of server errors come from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tweetshop_devstack.seed import PARIS, order_body

from bench.common.stack import CLIENT_KEEPALIVE_S
from bench.common.stats import percentile

DECLINED_CARD = "pm_card_visa_chargeDeclined"  # the stand-in declines it (bench/common/stripe_standin.py)
THREE_DS_CARD = "pm_card_threeDSecure2Required"  # stand-in: any id with this prefix is answered requires_action

# Outcomes, each a definitive answer to the buyer.
PAID = "paid"
SOLD_OUT_AT_POST = "sold_out_at_post"
SOLD_OUT_LATER = "sold_out_later"
DECLINED = "declined"
NEEDS_3DS = "needs_3ds"
CANCELLED_OTHER = "cancelled_other"  # cancelled with its stock reserved (e.g. a hold that expired)
REFUSED_OTHER = "refused_other"  # any other refusal of the POST (never expected)
SERVER_ERROR = "server_error"  # the POST answered 5xx
NO_ANSWER = "no_answer"  # nothing definitive within the wait
POST_TRIES = 3  # a POST whose connection dropped is sent again with the same Idempotency-Key


def card_of(index: int, *, declined_share: float, three_ds_share: float) -> tuple[str, str]:
    """(kind, payment method id) of buyer ``index``: shares spread evenly over the arrivals."""
    if three_ds_share > 0 and int((index + 1) * three_ds_share) > int(index * three_ds_share):
        return "3ds", f"{THREE_DS_CARD}_{index}"
    if declined_share > 0 and int((index + 1) * declined_share + 0.5) > int(index * declined_share + 0.5):
        return "declined", DECLINED_CARD
    return "card", f"pm_card_visa_{index}"


@dataclass
class Buyer:
    """One buyer: who, with which card, when it tapped Buy, what it was told and when."""

    index: int
    wave: str
    kind: str
    payment_method: str
    due: float = 0.0
    tapped: float | None = None
    order_id: str | None = None
    token: str | None = None
    outcome: str | None = None
    answered: float | None = None
    accepted: float | None = None  # when the POST answered 202 (the order was taken)
    detail: str = ""

    def answer(self, outcome: str, at: float, detail: str = "") -> None:
        """The first definitive answer wins."""
        if self.outcome is None:
            self.outcome = outcome
            self.answered = at
            self.detail = detail

    @property
    def to_accepted_s(self) -> float | None:
        """From tapping Buy to the POST's 202 (orders the POST took)."""
        if self.tapped is None or self.accepted is None:
            return None
        return self.accepted - self.tapped

    @property
    def accepted_to_answer_s(self) -> float | None:
        """From the POST's 202 to the definitive answer: the paid-order pipeline's part of the wait."""
        if self.accepted is None or self.answered is None:
            return None
        return self.answered - self.accepted

    @property
    def to_answer_s(self) -> float | None:
        """From tapping Buy (just before the POST) to the definitive answer."""
        if self.tapped is None or self.answered is None:
            return None
        return self.answered - self.tapped


@dataclass
class OrderNews:
    """What ``checkout.orders.v1`` said about each order, with when it reached our consumer."""

    terminal: dict[str, tuple[str, bool, str, float]] = field(default_factory=dict)  # type, stock_reserved, reason
    returned: dict[str, str] = field(default_factory=dict)  # orders whose reserved unit went back on sale
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)

    def on_record(self, _topic: str, value: dict[str, object], arrived: float) -> None:
        """Note OrderPaid, OrderPaymentFailed and OrderCancelled; wake the buyer waiting for the order."""
        event_type = value.get("event_type")
        order_id = value.get("order_id")
        if not isinstance(order_id, str) or event_type not in ("OrderPaid", "OrderPaymentFailed", "OrderCancelled"):
            return
        reserved = bool(value.get("stock_reserved", True))
        if event_type != "OrderPaid" and reserved:
            self.returned[order_id] = str(event_type)
        if order_id not in self.terminal:
            self.terminal[order_id] = (str(event_type), reserved, str(value.get("reason", "")), arrived)
            waiter = self.waiting.get(order_id)
            if waiter is not None:
                waiter.set()


@dataclass
class Requests:
    """Latency (s) and status of every request, by what it was."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    transport_errors: Counter[str] = field(default_factory=Counter)

    def note(self, what: str, seconds: float, status: int) -> None:
        """One answered request."""
        self.latencies.setdefault(what, []).append(seconds)
        self.statuses.setdefault(what, Counter())[status] += 1

    def server_errors(self) -> int:
        """Answers with a 5xx status, every kind of request together."""
        return sum(n for counts in self.statuses.values() for status, n in counts.items() if status >= 500)


@dataclass
class Schedule:
    """How well the generator kept to its schedule."""

    sent: int
    lag_p99_ms: float
    lag_max_ms: float
    started: float
    ended: float


class DropClient:
    """The HTTP side of the buyers and of the background timeline reader, through one aiohttp session."""

    def __init__(
        self,
        checkout_urls: Sequence[str],
        feed_url: str,
        *,
        news: OrderNews,
        requests: Requests,
        poll_s: float,
        answer_timeout_s: float,
        three_ds_poll_s: float = 1.0,
        connections: int,
    ) -> None:
        # Several checkout replicas: buyer i goes to replica i mod n, as a load balancer would spread them.
        self.checkout_urls = [url.rstrip("/") for url in checkout_urls]
        self.feed_url = feed_url.rstrip("/")
        self.news = news
        self.requests = requests
        self.poll_s = poll_s
        self.three_ds_poll_s = three_ds_poll_s
        self.answer_timeout_s = answer_timeout_s
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp, as the orders benchmark: the generator shares the cores with what it measures."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # Idle connections are dropped before uvicorn's own 5 s keep-alive closes them: with aiohttp's 15 s a
                # request could go out on a connection the server was closing (ClientOSError, a late buyer left
                # without an answer after three such tries in phase 2).
                connector=aiohttp.TCPConnector(limit=self.connections, keepalive_timeout=CLIENT_KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=120.0),
            )
        return self._session

    def checkout_url(self, buyer: Buyer) -> str:
        """The checkout replica this buyer's requests go to."""
        return self.checkout_urls[buyer.index % len(self.checkout_urls)]

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def _request(
        self, what: str, method: str, url: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any] | None] | None:
        started = time.monotonic()
        try:
            async with self.session.request(method, url, **kwargs) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                self.requests.note(what, time.monotonic() - started, response.status)
                return response.status, body if isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.requests.transport_errors[f"{what}: {type(exc).__name__}"] += 1
            return None

    async def buy(self, buyer: Buyer, product_id: str, tweet_id: str) -> None:
        """Tap Buy, then follow the order until a definitive answer (or the wait runs out)."""
        body = order_body(
            tweet_id,
            product_id,
            buyer_id=f"drop-buyer-{buyer.wave}-{buyer.index}",
            email=f"buyer{buyer.index}@example.com",
            payment_method=buyer.payment_method,
            shipping={**PARIS, "name": f"Buyer {buyer.index}", "line1": f"{buyer.index + 1} Rue de la Paix"},
        )
        buyer.tapped = time.monotonic()
        key = f"drop-{uuid.uuid4().hex}"
        # A connection dropped under load (a reset keep-alive connection) is retried with the same key, as a
        # client should: the key makes the retry return the order the first try made, if it made one.
        for _ in range(POST_TRIES):
            answer = await self._request(
                "post_order", "POST", f"{self.checkout_url(buyer)}/orders", json=body, headers={"Idempotency-Key": key}
            )
            if answer is not None:
                break
        now = time.monotonic()
        if answer is None:
            buyer.answer(NO_ANSWER, now, "transport error at the POST")
            return
        status, data = answer
        data = data or {}
        if status >= 500:
            buyer.answer(SERVER_ERROR, now, f"HTTP {status}")
            return
        if status == 409 and data.get("error") == "insufficient_stock":
            buyer.answer(SOLD_OUT_AT_POST, now)
            return
        if status not in (200, 202) or "id" not in data:
            buyer.answer(REFUSED_OTHER, now, f"HTTP {status} {data.get('error', '')}")
            return
        buyer.order_id = str(data["id"])
        buyer.accepted = now
        buyer.token = str(data.get("access_token", ""))
        await self._follow(buyer)

    def _from_news(self, buyer: Buyer) -> bool:
        assert buyer.order_id is not None
        news = self.news.terminal.get(buyer.order_id)
        if news is None:
            return False
        event_type, reserved, reason, arrived = news
        if event_type == "OrderPaid":
            buyer.answer(PAID, arrived)
        elif event_type == "OrderPaymentFailed":
            buyer.answer(DECLINED, arrived, reason)
        else:
            buyer.answer(SOLD_OUT_LATER if not reserved else CANCELLED_OTHER, arrived, reason)
        return True

    async def _page(self, buyer: Buyer) -> str | None:
        answer = await self._request(
            "order_page",
            "GET",
            f"{self.checkout_url(buyer)}/orders/{buyer.order_id}",
            headers={"Authorization": f"Bearer {buyer.token}"},
        )
        if answer is None or answer[0] != 200 or answer[1] is None:
            return None
        return str(answer[1].get("status", ""))

    async def _follow(self, buyer: Buyer) -> None:
        assert buyer.order_id is not None
        waiter = asyncio.Event()
        self.news.waiting[buyer.order_id] = waiter
        deadline = time.monotonic() + self.answer_timeout_s
        by_topic = False
        poll_s = self.three_ds_poll_s if buyer.kind == "3ds" else self.poll_s
        first = True
        try:
            while buyer.outcome is None:
                if self._from_news(buyer):
                    by_topic = True
                    break
                status = await self._page(buyer) if poll_s > 0 or first else None
                first = False
                now = time.monotonic()
                if self._from_news(buyer):
                    by_topic = True
                    break
                if status == "requires_action":
                    buyer.answer(NEEDS_3DS, now)
                elif status == "paid":
                    buyer.answer(PAID, now)
                elif status == "failed":
                    buyer.answer(DECLINED, now)
                elif status == "cancelled":
                    # The page does not say whether stock had been reserved; the event will, in a moment.
                    with_event_s = 2.0
                    try:
                        await asyncio.wait_for(waiter.wait(), timeout=with_event_s)
                    except TimeoutError:
                        buyer.answer(SOLD_OUT_LATER, now, "cancelled (page)")
                    continue
                if buyer.outcome is not None:
                    break
                if now > deadline:
                    buyer.answer(NO_ANSWER, now, "nothing definitive in time")
                    break
                with contextlib.suppress(TimeoutError):
                    # Without polling, the topic's event (or the deadline) is what wakes the buyer.
                    await asyncio.wait_for(waiter.wait(), timeout=poll_s if poll_s > 0 else max(0.1, deadline - now))
            if by_topic:
                # What the buyer's open page shows once the answer is there (its latency counts, not its time).
                await self._page(buyer)
        finally:
            self.news.waiting.pop(buyer.order_id, None)

    async def read_timeline(self, rate: float, stop: asyncio.Event) -> None:
        """The feed's timeline, read ``rate`` times a second until ``stop`` (a background reader)."""
        period = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set():
            await self._request("timeline", "GET", f"{self.feed_url}/timeline", params={"limit": "20"})
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                next_at = time.monotonic()


async def arrive(
    buyers: list[Buyer], act: Any, *, enough: asyncio.Event | None = None, open_until: float = math.inf
) -> Schedule:
    """Start ``act(buyer)`` for each buyer at its ``due`` offset after now, by the clock; wait for all. Once
    ``enough`` is set, buyers due after ``open_until`` seconds no longer come."""
    tasks: set[asyncio.Task[None]] = set()
    lags: list[float] = []
    start = time.monotonic() + 0.05
    sent = 0
    for buyer in buyers:
        if enough is not None and enough.is_set() and buyer.due >= open_until:
            break
        sent += 1
        due = start + buyer.due
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, time.monotonic() - due))
        task = asyncio.create_task(act(buyer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    ended = time.monotonic()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    ordered = sorted(lags)
    return Schedule(
        sent=sent,
        lag_p99_ms=round(percentile(ordered, 0.99) * 1000, 1) if ordered else 0.0,
        lag_max_ms=round(ordered[-1] * 1000, 1) if ordered else 0.0,
        started=start,
        ended=ended,
    )
