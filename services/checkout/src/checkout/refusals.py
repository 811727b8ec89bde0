"""A purchase of a sold-out product, refused before FastAPI: the drop's thousands of "sold out" answers, cheaply.

In a flash drop nearly every ``POST /orders`` is refused (5,000 buyers, 300 units). py-spy on checkout during the
drop benchmark: FastAPI's request handling around the route (dependencies, body parsing and validation, the
exception handlers, the response) cost more than the refusal's own work, its statements. This ASGI layer sits
inside the service's middlewares (body size limit, correlation id, request metrics, tracing) and in front of
FastAPI, and answers only what it can answer exactly as the route would:

- only ``POST /orders`` with a JSON body, no credential (no ``Authorization``, no token in the query: a
  signed-in buyer's order has its own checks) and a well-formed ``Idempotency-Key``;
- the body is validated by the route's own model (``OrderIn``), and ``orders.for_account`` as the route does;
- the rate limit is counted by the route's own limiter (``RateLimiter.guard``, which then does not count the
  request a second time);
- the refusal comes from ``orders.check_purchases``, the function the route calls (through ``check_purchase``),
  and only ``insufficient_stock`` and ``product_unavailable`` are answered here, with the body and status the
  route's handler would give;
- the purchases of one product checked at once share one statement (``ChecksTogether``): each is still read after
  it arrived.

Anything else (an invalid body, a key that names an order, a purchase that can go ahead, a limit passed, any
other refusal) goes on to FastAPI with the body it read, untouched: the route decides, as before.

The purchases it reads are admitted at most ``database_pool_max`` at a time (as many as the API has connections to
answer them with; ``Admission``); the rest wait their turn in arrival order, and the path is chosen on admission.
A signed-in buyer's purchase is not read here: the route admits it through the same ``Admission`` around its
database work only, after its credential and Stripe's answer about the card (a Stripe round trip inside the
admission would let through only ``database_pool_max`` purchases per round trip). In a drop's
first second, before the product is known sold out here, every purchase goes on to the route; without this, the
thousand that arrived meanwhile were all already in it (each waiting inside the route for a connection) when the
product sold out, and each paid the route's cost to be refused (bench/README.md, stop 26). Admitted after, they
find the product known sold out and take the cheap path. In arrival order, not newest first: letting a newcomer
for a product known sold out pass the queue answered half the buyers at once and left the queued ones waiting
until the burst ended (sold out p99 3.4–3.9 s against 2.4–2.6 s in order, p50 20 ms against 600 ms).

It only tries for a product the route (or itself) refused as sold out less than ``SOLD_OUT_MEMORY_S`` ago in this
process: an order of any other product goes straight on, at the cost of one more validation of its body (tens of
microseconds) and no statement. The memory only
chooses the path, never the answer: the refusal is always read from the database, and a product that is on sale
again goes on to the route (one statement more, once) and is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tweetshop_platform.errors import DomainError
from tweetshop_platform.http import error_body
from tweetshop_platform.ratelimit import RateLimited, RateLimiter

from . import access
from .api import OrderIn, idempotency_key_problem
from .config import CheckoutSettings
from .domain import PurchaseRequest
from .usecases import orders

log = structlog.get_logger(__name__)

ANSWERED_HERE = frozenset({"insufficient_stock", "product_unavailable"})
_PATH = "/orders"
SOLD_OUT_MEMORY_S = 2.0
_MEMORY_MAX = 10_000  # products remembered at most (only real ones refused as sold out get in)


_ADMITTED = "tweetshop.purchase_admitted"  # in a request's scope: it holds its admission already


class Admission:
    """Purchases handled at once, as many as the API has database connections; the rest wait their turn, in
    arrival order (``asyncio.Semaphore`` wakes its waiters first in, first out). One per checkout process, for
    every purchase: a request admitted once (``enter(scope)`` marks its scope) is not admitted again further in."""

    def __init__(self, slots: int) -> None:
        self._slots = asyncio.Semaphore(slots)

    @contextlib.asynccontextmanager
    async def enter(self, scope: Scope) -> AsyncIterator[None]:
        if scope.get(_ADMITTED):
            yield
            return
        async with self._slots:
            scope[_ADMITTED] = True
            try:
                yield
            finally:
                scope.pop(_ADMITTED, None)


class SoldOutRefusals:
    """ASGI middleware of checkout: see the module's text."""

    def __init__(self, app: ASGIApp, *, service: FastAPI, settings: CheckoutSettings, admission: Admission) -> None:
        self.app = app
        self.service = service
        self.settings = settings
        self._route: APIRoute | None = None
        self._sold_out: dict[uuid.UUID, float] = {}  # product id -> when a refusal of it was last seen (monotonic)
        self._admission = admission
        self._checks = ChecksTogether(lambda: service.state.runtime.pool, settings)

    def _orders_route(self) -> APIRoute:
        if self._route is None:
            self._route = next(
                r
                for r in self.service.routes
                if isinstance(r, APIRoute) and r.path == _PATH and "POST" in (r.methods or set())
            )
        return self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == _PATH
            and not scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        key: str | None = None
        json_body = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                await self.app(scope, receive, send)
                return
            if name == b"idempotency-key" and key is None:  # the first one, as the route's Header reads it
                key = value.decode("latin-1")
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
        if key is None or not json_body or idempotency_key_problem(key) is not None:
            await self.app(scope, receive, send)
            return
        body, more = await _read_body(receive)
        if more is not None:  # the client went away while sending: let the route see it as it would have
            await self.app(scope, _replay(body, more, receive), send)
            return
        try:
            purchase = orders.for_account(OrderIn.model_validate_json(body).to_request(), None)
        except (ValidationError, DomainError, ValueError):
            await self.app(scope, _replay(body, None, receive), send)
            return
        async with self._admission.enter(scope):
            # The path is chosen on admission, not on arrival: the purchases that queued while the product sold out
            # take the cheap one.
            if await self._refused(scope, receive, send, body, purchase, key):
                return
            await self.app(scope, _replay(body, None, receive), self._watching(send, purchase.product_id))

    async def _refused(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, purchase: PurchaseRequest, key: str
    ) -> bool:
        """Whether the purchase was answered here: a product refused as sold out lately, and refused again."""
        product_id = purchase.product_id
        seen = self._sold_out.get(product_id)
        if seen is None or time.monotonic() - seen >= SOLD_OUT_MEMORY_S or purchase.save_card:
            return False
        answer = await self._refusal(scope, purchase, key)
        if answer is None:
            self._sold_out.pop(product_id, None)
            return False
        self._remember(product_id)
        await answer(scope, _replay(body, None, receive), send)
        return True

    def _remember(self, product_id: uuid.UUID) -> None:
        if len(self._sold_out) >= _MEMORY_MAX:
            self._sold_out.clear()
        self._sold_out[product_id] = time.monotonic()

    def _watching(self, send: Send, product_id: uuid.UUID) -> Send:
        """``send`` that remembers the product when the route answers 409 ``insufficient_stock``."""
        conflict = False

        async def watched(message: Message) -> None:
            nonlocal conflict
            if message["type"] == "http.response.start":
                conflict = message["status"] == 409
            elif (
                conflict
                and message["type"] == "http.response.body"
                and b'"insufficient_stock"' in message.get("body", b"")
            ):
                self._remember(product_id)
            await send(message)

        return watched

    async def _refusal(self, scope: Scope, purchase: PurchaseRequest, key: str) -> JSONResponse | None:
        route = self._orders_route()
        scope["route"] = route  # what the request metrics and the limiter name the request by, as after routing
        limiter: RateLimiter | None = getattr(self.service.state, "rate_limiter", None)
        if limiter is not None and limiter.enabled:
            try:
                await limiter.guard(Request(scope))
            except RateLimited:
                return None  # the route answers 429 (and counts it in its metrics)
        try:
            checked = await self._checks.check(purchase, access.idempotency_key_hash(key))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The database did not answer: the route meets the same and answers as it always has.
            log.warning("sold-out check ahead of the route failed", error=repr(exc))
            return None
        if isinstance(checked, DomainError) and checked.code in ANSWERED_HERE:
            body = error_body(checked.code, checked.message, **checked.details)
            return JSONResponse(body, status_code=checked.status)
        return None


class ChecksTogether:
    """``orders.check_purchases`` for the purchases of one product that wait at once, in one statement.

    In a drop nearly every purchase ahead of the route is a refusal, each for one statement: a round trip and the
    statement's work in Postgres, per buyer. The purchases checked here are read together instead: the first of a
    product (and tweet) starts a read of what waits for it; those that come while it runs wait for the next read,
    which starts when it ends, and takes all of them (``most`` at a time). Each answer is still read from the
    database after its purchase arrived (a read that had begun already is never shared with a newcomer), so it is
    the answer it would have had alone: only the round trips are shared. A read that fails fails each purchase it
    held, with its exception.
    """

    def __init__(self, pool: Callable[[], asyncpg.Pool], settings: CheckoutSettings, *, most: int = 64) -> None:
        self._pool = pool
        self._settings = settings
        self._most = most
        self._waiting: dict[tuple[uuid.UUID, uuid.UUID], list[_Waiting]] = {}
        self._readers: dict[tuple[uuid.UUID, uuid.UUID], asyncio.Task[None]] = {}

    async def check(self, purchase: PurchaseRequest, key_hash: str) -> orders.Checked | DomainError:
        group = (purchase.product_id, purchase.tweet_id)
        waiting = _Waiting(purchase, key_hash, asyncio.get_running_loop().create_future())
        self._waiting.setdefault(group, []).append(waiting)
        if group not in self._readers:
            self._readers[group] = asyncio.create_task(self._read(group), name=f"sold-out-checks-{group[0]}")
        return await waiting.answer

    async def _read(self, group: tuple[uuid.UUID, uuid.UUID]) -> None:
        batch: list[_Waiting] = []
        try:
            while queue := self._waiting.pop(group, None):
                queue = [w for w in queue if not w.answer.done()]  # a client that went away is not read for
                batch, rest = queue[: self._most], queue[self._most :]
                if rest:
                    self._waiting[group] = rest + self._waiting.get(group, [])
                if not batch:
                    continue
                try:
                    async with self._pool().acquire() as conn:
                        answers = await orders.check_purchases(
                            conn, self._settings, [(w.purchase, w.key_hash) for w in batch]
                        )
                except Exception as exc:  # each purchase meets it, as it would have alone
                    for w in batch:
                        if not w.answer.done():
                            w.answer.set_exception(exc)
                    continue
                for w, answer in zip(batch, answers, strict=True):
                    if not w.answer.done():
                        w.answer.set_result(answer)
        finally:
            del self._readers[group]
            # Only when the reader itself was cancelled (shutdown) is anything left unanswered: it is cancelled too.
            for w in batch + self._waiting.pop(group, []):
                if not w.answer.done():
                    w.answer.cancel()


@dataclass(frozen=True)
class _Waiting:
    purchase: PurchaseRequest
    key_hash: str
    answer: asyncio.Future[orders.Checked | DomainError]


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body; with the message that ended it early (a disconnect) when it did not arrive whole."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), message
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), None


def _replay(body: bytes, ended: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read so far once (or the message that cut it short), then the real one."""
    pending: list[Any] = [{"type": "http.request", "body": body, "more_body": False} if ended is None else ended]

    async def replayed() -> Message:
        if pending:
            message: Message = pending.pop()
            return message
        return await receive()

    return replayed
