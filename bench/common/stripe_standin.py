"""A payment STAND-IN for benchmarks only: answers the Stripe endpoints checkout uses, after a fixed latency.

This is not Stripe and not localstripe. It exists so the orders benchmark can
show how many orders the pipeline carries while many slow payment calls are in
flight: every request waits ``--latency-ms`` (100 ms by default, like a real
payment API), any number of requests are served at once, and ``--rate-429``
answers that share of requests with Stripe's 429 ``rate_limit_error`` so
checkout's backoff is exercised. Every answer carries the header
``Stripe-Stand-In: tweetshop-bench``.

Served (the subset of the Stripe API that ``checkout.gateway`` calls):
``POST /v1/payment_intents`` (with ``confirm=true``), ``GET /v1/payment_intents``
(``limit``, ``starting_after``), ``GET /v1/payment_intents/{id}``,
``POST /v1/payment_intents/{id}/confirm``, ``POST /v1/payment_intents/{id}/cancel``,
``POST /v1/refunds``, ``GET /v1/refunds`` (``payment_intent``); for saved cards (``checkout.cards``, as
checkout calls them against any API but api.stripe.com): ``POST /v1/customers`` (``metadata``),
``GET /v1/customers`` (``limit``, ``starting_after``), ``GET /v1/customers/{id}``, ``DELETE /v1/customers/{id}``
(detaches its cards, as Stripe does), ``GET /v1/payment_methods/{id}``, ``POST /v1/payment_methods/{id}/attach``
(``customer``), ``POST /v1/payment_methods/{id}/detach``, ``GET /v1/payment_methods`` (``customer``, ``type``,
``limit``). A test token (``pm_card_visa``, ``pm_card_mastercard``, …) is a fresh Visa (or named brand) card,
attached to no Customer; attaching one makes a new ``pm_…`` on the Customer, as Stripe does. A PaymentIntent
whose PaymentMethod is attached to a Customer must name that Customer (Stripe's ``invalid_request_error``
otherwise). ``Idempotency-Key``
is honoured as Stripe does. ``pm_card_visa_chargeDeclined`` is declined. A payment
method whose id starts with ``pm_card_threeDSecure2Required`` (Stripe's own 3-D Secure
test card; the stand-in accepts a suffix so each buyer has a card of its own) is
answered ``requires_action`` (stand-in behaviour for the drop benchmark: the buyer is
asked to authenticate, and in the benchmark never does).
With ``--webhook-url`` it also posts a signed ``payment_intent.succeeded`` event
for each successful charge, as Stripe does.

Benchmark-only endpoints: ``GET /_standin/stats`` (requests, peak in-flight,
PaymentIntents per order) and ``POST /_standin/config`` (JSON ``latency_ms``,
``rate_429``, ``webhook_url``, ``webhook_secret``, ``reset_peak``) to change behaviour between phases.

    python -m bench.common.stripe_standin --port 0 --latency-ms 100 --rate-429 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

LABEL = "tweetshop-bench"
DECLINED_METHODS = frozenset({"pm_card_visa_chargeDeclined", "pm_card_chargeDeclined", "pm_card_chargeCustomerFail"})
# Stand-in only: any payment method id with this prefix needs 3-D Secure (answered requires_action, never completed).
THREE_D_SECURE_PREFIX = "pm_card_threeDSecure2Required"


@dataclass
class StandInState:
    """Everything the stand-in remembers: intents, refunds, idempotent answers and counters."""

    latency_s: float
    rate_429: float
    webhook_url: str | None = None
    webhook_secret: str = ""
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion order = creation order
    intent_order: list[str] = field(default_factory=list)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)  # insertion order = creation order
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # made by attaching a test token
    idempotent: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    intents_per_order: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    webhooks_sent: int = 0
    webhook_failures: int = 0


def _form_to_dict(form: Any) -> dict[str, Any]:
    """Stripe's form encoding (``metadata[order_id]=…``, ``payment_method_types[0]=card``) as nested values."""
    out: dict[str, Any] = {}
    for key, value in form.items():
        if "[" in key and key.endswith("]"):
            head, _, rest = key.partition("[")
            sub = rest[:-1]
            if sub.isdigit() or sub == "":
                out.setdefault(head, []).append(value)
            else:
                out.setdefault(head, {})[sub] = value
        else:
            out[key] = value
    return out


def _error(status: int, error_type: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"type": error_type, "message": message, **extra}}
    return web.json_response(body, status=status, headers={"Stripe-Stand-In": LABEL})


def _ok(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"Stripe-Stand-In": LABEL})


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _missing(kind: str, object_id: str, param: str) -> web.Response:
    return _error(404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


# The last four digits of Stripe's test cards, by the brand in their test token (``pm_card_<brand>``).
_TEST_LAST4 = {"visa": "4242", "mastercard": "4444", "amex": "8431", "discover": "1117"}


def _card_payment_method(pm_id: str, brand: str, customer: str | None) -> dict[str, Any]:
    """A card PaymentMethod as Stripe answers one (the fields checkout reads, and a few more)."""
    return {
        "id": pm_id,
        "object": "payment_method",
        "type": "card",
        "customer": customer,
        "card": {"brand": brand, "last4": _TEST_LAST4[brand], "exp_month": 12, "exp_year": 2034, "funding": "credit"},
        "created": int(time.time()),
        "livemode": False,
        "metadata": {},
    }


def _page(request: web.Request, url: str, items: list[dict[str, Any]]) -> web.Response:
    """A Stripe list, newest first, ``limit`` (1..100, 10 by default) after ``starting_after``."""
    try:
        limit = max(1, min(100, int(request.query.get("limit", "10"))))
    except ValueError:
        return _error(400, "invalid_request_error", "Invalid integer: limit", param="limit")
    newest_first = list(reversed(items))
    after = request.query.get("starting_after")
    if after:
        ids = [item["id"] for item in newest_first]
        if after not in ids:
            return _error(400, "invalid_request_error", f"No such object: {after}", param="starting_after")
        newest_first = newest_first[ids.index(after) + 1 :]
    page = newest_first[:limit]
    return _ok({"object": "list", "url": url, "has_more": len(newest_first) > limit, "data": page})


class StandIn:
    """The aiohttp application and its handlers."""

    def __init__(self, state: StandInState) -> None:
        self.state = state
        self._session: ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = web.Application(middlewares=[self._middleware])
        self.app.add_routes(
            [
                web.post("/v1/payment_intents", self.create_intent),
                web.get("/v1/payment_intents", self.list_intents),
                web.get("/v1/payment_intents/{id}", self.retrieve_intent),
                web.post("/v1/payment_intents/{id}/confirm", self.confirm_intent),
                web.post("/v1/payment_intents/{id}/cancel", self.cancel_intent),
                web.post("/v1/refunds", self.create_refund),
                web.get("/v1/refunds", self.list_refunds),
                web.post("/v1/customers", self.create_customer),
                web.get("/v1/customers", self.list_customers),
                web.get("/v1/customers/{id}", self.retrieve_customer),
                web.delete("/v1/customers/{id}", self.delete_customer),
                web.get("/v1/payment_methods", self.list_payment_methods),
                web.get("/v1/payment_methods/{id}", self.retrieve_payment_method),
                web.post("/v1/payment_methods/{id}/attach", self.attach_payment_method),
                web.post("/v1/payment_methods/{id}/detach", self.detach_payment_method),
                web.get("/_standin/stats", self.stats),
                web.post("/_standin/config", self.configure),
            ]
        )
        self.app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        s = self.state
        resource = request.match_info.route.resource
        s.requests[f"{request.method} {resource.canonical if resource is not None else request.path}"] += 1
        s.in_flight += 1
        s.peak_in_flight = max(s.peak_in_flight, s.in_flight)
        try:
            # The fixed latency of a remote payment API; asyncio.sleep keeps any number of calls in flight.
            await asyncio.sleep(s.latency_s)
            if s.rate_429 > 0 and random.random() < s.rate_429:
                s.rate_limited += 1
                return _error(429, "invalid_request_error", "Too many requests (stand-in)", code="rate_limit")
            key = request.headers.get("Idempotency-Key")
            if request.method == "POST" and key:
                cache_key = f"{request.path}:{key}"
                if cache_key in s.idempotent:
                    status, body = s.idempotent[cache_key]
                    return _ok(body, status) if status < 400 else web.json_response(body, status=status)
                response = await handler(request)
                if isinstance(response, web.Response) and response.body is not None:
                    payload = json.loads(bytes(response.body))  # type: ignore[arg-type]
                    s.idempotent[cache_key] = (response.status, payload)
                return response
            return await handler(request)
        finally:
            s.in_flight -= 1

    # --- PaymentIntents ------------------------------------------------------------------------------------
    async def create_intent(self, request: web.Request) -> web.Response:
        params = _form_to_dict(await request.post())
        try:
            amount = int(params["amount"])
            currency = str(params["currency"]).lower()
        except (KeyError, ValueError):
            return _error(400, "invalid_request_error", "amount and currency are required")
        metadata = params.get("metadata") or {}
        customer = params.get("customer") or None
        if customer is not None and customer not in self.state.customers:
            return _missing("customer", str(customer), "customer")
        pm = self._payment_method(str(params["payment_method"])) if params.get("payment_method") else None
        if pm is not None and pm["customer"] is not None and pm["customer"] != customer:
            # Stripe: a card saved on a Customer pays only for that Customer.
            return _error(
                400,
                "invalid_request_error",
                "The provided PaymentMethod is attached to another customer.",
                param="payment_method",
            )
        intent: dict[str, Any] = {
            "id": _new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": currency,
            "status": "requires_confirmation" if params.get("payment_method") else "requires_payment_method",
            "payment_method": params.get("payment_method"),
            "client_secret": None,
            "metadata": metadata,
            "customer": customer,
            "created": int(time.time()),
            "last_payment_error": None,
            "livemode": False,
        }
        intent["client_secret"] = f"{intent['id']}_secret_{secrets.token_hex(8)}"
        self.state.intents[intent["id"]] = intent
        self.state.intent_order.append(intent["id"])
        if isinstance(metadata, dict) and metadata.get("order_id"):
            self.state.intents_per_order[str(metadata["order_id"])] += 1
        if str(params.get("confirm", "")).lower() == "true":
            return self._confirm(intent)
        return _ok(intent)

    def _confirm(self, intent: dict[str, Any]) -> web.Response:
        if intent["payment_method"] in DECLINED_METHODS:
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
            return _error(
                402,
                "card_error",
                "Your card was declined.",
                code="card_declined",
                decline_code="generic_decline",
                payment_intent=intent,
            )
        if str(intent["payment_method"] or "").startswith(THREE_D_SECURE_PREFIX):
            # Stand-in: the buyer must authenticate (3-D Secure) with the client secret; nothing is charged yet.
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
            return _ok(intent)
        intent["status"] = "succeeded"
        intent["amount_received"] = intent["amount"]
        self._send_webhook("payment_intent.succeeded", intent)
        return _ok(intent)

    async def confirm_intent(self, request: web.Request) -> web.Response:
        intent = self.state.intents.get(request.match_info["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", code="resource_missing")
        return self._confirm(intent)

    async def retrieve_intent(self, request: web.Request) -> web.Response:
        intent = self.state.intents.get(request.match_info["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", code="resource_missing")
        return _ok(intent)

    async def cancel_intent(self, request: web.Request) -> web.Response:
        intent = self.state.intents.get(request.match_info["id"])
        if intent is None:
            return _error(404, "invalid_request_error", "No such payment_intent", code="resource_missing")
        if intent["status"] == "succeeded":
            return _error(400, "invalid_request_error", "This PaymentIntent has already succeeded")
        intent["status"] = "canceled"
        return _ok(intent)

    async def list_intents(self, request: web.Request) -> web.Response:
        limit = max(1, min(100, int(request.query.get("limit", "10"))))
        order = self.state.intent_order
        # Newest first, as Stripe lists.
        end = len(order)
        after = request.query.get("starting_after")
        if after:
            try:
                end = order.index(after)
            except ValueError:
                return _error(400, "invalid_request_error", f"No such object: {after}")
        start = max(0, end - limit)
        page = [self.state.intents[i] for i in reversed(order[start:end])]
        return _ok({"object": "list", "url": "/v1/payment_intents", "has_more": start > 0, "data": page})

    # --- refunds -------------------------------------------------------------------------------------------
    async def create_refund(self, request: web.Request) -> web.Response:
        params = _form_to_dict(await request.post())
        intent = self.state.intents.get(str(params.get("payment_intent", "")))
        if intent is None or intent["status"] != "succeeded":
            return _error(400, "invalid_request_error", "This PaymentIntent has no successful charge to refund")
        amount = int(params.get("amount", intent["amount"]))
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "succeeded",
            "metadata": params.get("metadata") or {},
            "created": int(time.time()),
        }
        self.state.refunds[refund["id"]] = refund
        return _ok(refund)

    async def list_refunds(self, request: web.Request) -> web.Response:
        wanted = request.query.get("payment_intent")
        data = [r for r in reversed(self.state.refunds.values()) if wanted is None or r["payment_intent"] == wanted]
        limit = max(1, min(100, int(request.query.get("limit", "10"))))
        return _ok({"object": "list", "url": "/v1/refunds", "has_more": len(data) > limit, "data": data[:limit]})

    # --- Customers and PaymentMethods (saved cards) ---------------------------------------------------------
    def _payment_method(self, pm_id: str) -> dict[str, Any] | None:
        """A PaymentMethod made here, or a fresh one for a test token (Stripe's ``pm_card_<brand>``); else None."""
        found = self.state.payment_methods.get(pm_id)
        if found is not None:
            return found
        if not pm_id.startswith("pm_card_"):
            return None
        brand = pm_id.removeprefix("pm_card_").split("_")[0].lower() or "visa"
        brand = brand if brand in _TEST_LAST4 else "visa"
        return _card_payment_method(pm_id, brand, None)

    async def create_customer(self, request: web.Request) -> web.Response:
        params = _form_to_dict(await request.post())
        customer: dict[str, Any] = {
            "id": _new_id("cus"),
            "object": "customer",
            "created": int(time.time()),
            "metadata": params.get("metadata") or {},
            "livemode": False,
        }
        self.state.customers[customer["id"]] = customer
        return _ok(customer)

    async def retrieve_customer(self, request: web.Request) -> web.Response:
        customer = self.state.customers.get(request.match_info["id"])
        if customer is None:
            return _missing("customer", request.match_info["id"], "id")
        return _ok(customer)

    async def list_customers(self, request: web.Request) -> web.Response:
        return _page(request, "/v1/customers", list(self.state.customers.values()))

    async def delete_customer(self, request: web.Request) -> web.Response:
        customer = self.state.customers.pop(request.match_info["id"], None)
        if customer is None:
            return _missing("customer", request.match_info["id"], "id")
        for pm in self.state.payment_methods.values():
            if pm["customer"] == customer["id"]:
                pm["customer"] = None  # Stripe detaches a deleted Customer's cards
        return _ok({"id": customer["id"], "object": "customer", "deleted": True})

    async def retrieve_payment_method(self, request: web.Request) -> web.Response:
        pm = self._payment_method(request.match_info["id"])
        if pm is None:
            return _missing("payment_method", request.match_info["id"], "payment_method")
        return _ok(pm)

    async def attach_payment_method(self, request: web.Request) -> web.Response:
        params = _form_to_dict(await request.post())
        customer = str(params.get("customer") or "")
        if customer not in self.state.customers:
            return _missing("customer", customer, "customer")
        pm = self._payment_method(request.match_info["id"])
        if pm is None:
            return _missing("payment_method", request.match_info["id"], "payment_method")
        if pm["customer"] == customer:
            return _ok(pm)
        if pm["customer"] is not None:
            return _error(
                400, "invalid_request_error", "The payment method you provided is already attached to a customer."
            )
        if pm["id"] not in self.state.payment_methods:
            # A test token is a template: attaching it makes a new PaymentMethod, as Stripe does.
            pm = _card_payment_method(_new_id("pm"), pm["card"]["brand"], customer)
            self.state.payment_methods[pm["id"]] = pm
        pm["customer"] = customer
        return _ok(pm)

    async def detach_payment_method(self, request: web.Request) -> web.Response:
        pm = self.state.payment_methods.get(request.match_info["id"])
        if pm is None or pm["customer"] is None:
            return _error(
                400, "invalid_request_error", "The payment method you provided is not attached to a customer."
            )
        pm["customer"] = None
        return _ok(pm)

    async def list_payment_methods(self, request: web.Request) -> web.Response:
        customer = request.query.get("customer")
        if not customer:
            return _error(400, "invalid_request_error", "Missing required param: customer.", param="customer")
        wanted = request.query.get("type")
        data = [
            pm
            for pm in self.state.payment_methods.values()
            if pm["customer"] == customer and (wanted is None or pm["type"] == wanted)
        ]
        return _page(request, "/v1/payment_methods", data)

    # --- webhooks ------------------------------------------------------------------------------------------
    def _send_webhook(self, event_type: str, obj: dict[str, Any]) -> None:
        if not self.state.webhook_url:
            return
        task = asyncio.create_task(self._post_webhook(event_type, dict(obj)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_webhook(self, event_type: str, obj: dict[str, Any]) -> None:
        s = self.state
        assert s.webhook_url is not None
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
        }
        payload = json.dumps(event)
        stamp = int(time.time())
        signature = hmac.new(s.webhook_secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
        if self._session is None:
            self._session = ClientSession(timeout=ClientTimeout(total=30))
        try:
            async with self._session.post(
                s.webhook_url,
                data=payload,
                headers={"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={signature}"},
            ) as response:
                await response.read()
                if response.status >= 300:
                    s.webhook_failures += 1
                else:
                    s.webhooks_sent += 1
        except (TimeoutError, OSError):
            s.webhook_failures += 1

    # --- benchmark-only ------------------------------------------------------------------------------------
    async def stats(self, _: web.Request) -> web.Response:
        s = self.state
        per_order = s.intents_per_order
        return _ok(
            {
                "label": "payment stand-in (fixed latency, not Stripe)",
                "latency_ms": s.latency_s * 1000,
                "rate_429": s.rate_429,
                "requests": dict(s.requests),
                "rate_limited": s.rate_limited,
                "peak_in_flight": s.peak_in_flight,
                "in_flight": s.in_flight,
                "payment_intents": len(s.intents),
                "orders_with_intents": len(per_order),
                "orders_with_several_intents": sum(1 for n in per_order.values() if n > 1),
                "max_intents_per_order": max(per_order.values(), default=0),
                "payment_intents_for_customers": sum(1 for i in s.intents.values() if i.get("customer")),
                "customers": len(s.customers),
                "saved_cards": sum(1 for pm in s.payment_methods.values() if pm["customer"] is not None),
                "webhooks_sent": s.webhooks_sent,
                "webhook_failures": s.webhook_failures,
            }
        )

    async def configure(self, request: web.Request) -> web.Response:
        body = await request.json()
        if "latency_ms" in body:
            self.state.latency_s = max(0.0, float(body["latency_ms"]) / 1000.0)
        if "rate_429" in body:
            self.state.rate_429 = min(1.0, max(0.0, float(body["rate_429"])))
        if "webhook_url" in body:
            self.state.webhook_url = str(body["webhook_url"]) or None
            self.state.webhook_secret = str(body.get("webhook_secret", self.state.webhook_secret))
        if "reset_peak" in body:
            self.state.peak_in_flight = self.state.in_flight
        return await self.stats(request)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the stand-in until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="fixed latency of every API call")
    parser.add_argument("--rate-429", type=float, default=0.0, help="share of API calls answered 429 (0..1)")
    parser.add_argument("--webhook-url", default=None, help="POST signed payment_intent.succeeded events here")
    parser.add_argument("--webhook-secret", default="", help="the whsec_… secret the events are signed with")
    args = parser.parse_args(argv)
    state = StandInState(
        latency_s=args.latency_ms / 1000.0,
        rate_429=args.rate_429,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    print(
        f"payment STAND-IN (benchmark only, not Stripe) on {args.host}:{sock.getsockname()[1]}, "
        f"latency {args.latency_ms:g} ms, 429 rate {args.rate_429:g}",
        flush=True,
    )
    web.run_app(StandIn(state).app, sock=sock, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
