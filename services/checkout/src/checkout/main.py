"""checkout: orders, Stripe payments, refunds. The only wiring: HTTP routes, subscriptions, workers, runtime."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response, status
from tweetshop_platform import ratelimit
from tweetshop_platform.auth import bearer_token, operator_only
from tweetshop_platform.errors import DomainError
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import domain, handlers, metrics
from .api import (
    OrderCreated,
    OrderIn,
    OrderOut,
    PaymentMismatchOut,
    ReconcileOut,
    RefundIn,
    WebhookAck,
    idempotency_key_problem,
)
from .config import CheckoutSettings
from .gateway import PaymentGateway, StripeGateway, verify_webhook
from .reconciler import Reconciler
from .usecases import mismatches, orders, refunds, webhooks
from .worker import PaymentWorker

log = structlog.get_logger(__name__)


def create_app(settings: CheckoutSettings | None = None, *, gateway: PaymentGateway | None = None) -> FastAPI:
    """The checkout service: HTTP API, its consumers, the payment worker and the outbox relay."""
    settings = settings or CheckoutSettings()
    runtime = ServiceRuntime(settings, package="checkout")
    payments: PaymentGateway
    if gateway is None:
        stripe_gateway = StripeGateway(settings)
        runtime.add_shutdown_hook(stripe_gateway.aclose)
        payments = stripe_gateway
    else:
        payments = gateway
    worker = PaymentWorker(lambda: runtime.pool, payments, settings)
    reconciler = Reconciler(lambda: runtime.pool, payments, settings)

    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime.subscribe_declared(
        {
            "merchants": handlers.on_merchant_event,
            "products": handlers.on_product_event,
            "tweets": handlers.on_buyable_tweet,
            "reservations": handlers.on_reservation_event,
            "shipments": handlers.on_shipment_event,
        },
        after_commit={"reservations": worker.after_reservation},
    )
    runtime.add_worker("payments", worker.run)
    runtime.add_worker("reconciler", reconciler.run)

    app = create_service_app(
        runtime,
        title="tweetshop checkout",
        description=(
            "Orders from tweets, paid with Stripe PaymentIntents. Publishes checkout.orders.v1; reads "
            "catalog.products.v1, catalog.reservations.v1, feed.buyable-tweets.v1 and tracking.shipments.v1."
        ),
    )
    app.state.payment_worker = worker
    app.state.reconciler = reconciler

    @app.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderCreated,
        tags=["orders"],
        summary="Buy from a tweet",
        responses={
            200: {"description": "The same request again (same Idempotency-Key): the same order"},
            429: {
                "description": "Too many orders of this buyer, card or address wait for payment (Retry-After), "
                "or too many requests from this client"
            },
        },
    )
    async def place_order(
        body: OrderIn,
        request: Request,
        response: Response,
        idempotency_key: str | None = Header(
            default=None, alias="Idempotency-Key", description="A fresh random value per purchase (e.g. a UUID)"
        ),
    ) -> OrderCreated:
        problem = idempotency_key_problem(idempotency_key)
        if problem is not None or idempotency_key is None:
            raise DomainError(problem or "missing Idempotency-Key", code="idempotency_key_required")
        placed = await orders.place_order(
            runtime.pool,
            settings,
            body.to_request(),
            domain.request_fingerprint(body.canonical()),
            idempotency_key,
            str(request.state.correlation_id),
        )
        if placed.replayed:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
        order = placed.order
        return OrderCreated(
            id=order.id,
            status=order.status,
            access_token=placed.access_token,
            amount_minor=order.amount_minor,
            currency=order.currency,
        )

    @app.get("/orders/{order_id}", response_model=OrderOut, tags=["orders"], summary="The order, for its buyer")
    async def get_order(order_id: uuid.UUID, request: Request) -> OrderOut:
        token = bearer_token(request)
        order = await orders.get_order(runtime.pool, order_id, token)
        return OrderOut.of(order, access_token=token, tracking_base_url=settings.tracking_public_url)

    @app.post(
        "/orders/{order_id}/refund",
        response_model=OrderOut,
        tags=["orders"],
        summary="Refund a paid order (all that is left, or amount_minor); bearer: its merchant's API key",
        responses={
            401: {"description": "No key"},
            403: {"description": "Not the key of the order's merchant (a buyer cannot refund their own order)"},
            404: {"description": "No such order"},
            409: {"description": "Not paid, or more than is left to refund"},
        },
    )
    async def refund_order(
        order_id: uuid.UUID, request: Request, body: Annotated[RefundIn | None, Body()] = None
    ) -> OrderOut:
        token = bearer_token(request)
        amount = body.amount_minor if body is not None else None
        order = await refunds.refund_order(runtime.pool, payments, settings, order_id, token, amount)
        # The merchant's view: no tracking link (it would carry the merchant's key, and the map is the buyer's).
        return OrderOut.of(order, access_token="", tracking_base_url=settings.tracking_public_url)

    @app.post(
        "/orders/{order_id}/cancel",
        response_model=OrderOut,
        tags=["orders"],
        summary="The buyer cancels an order not paid yet (nothing is charged, the stock goes back on sale)",
        responses={409: {"description": "Paid, failed, or a payment attempt is in flight right now"}},
    )
    async def cancel_order(order_id: uuid.UUID, request: Request) -> OrderOut:
        token = bearer_token(request)
        order = await orders.cancel_order(runtime.pool, payments, settings, order_id, token)
        return OrderOut.of(order, access_token=token, tracking_base_url=settings.tracking_public_url)

    operator = operator_only(settings.operator_key)

    @app.post(
        "/ops/reconcile",
        response_model=ReconcileOut,
        tags=["operators"],
        summary="Run one reconciler pass now (bearer: the operator key): orders open past their deadline end",
        dependencies=[Depends(operator)],
        responses={401: {"description": "No operator key"}, 403: {"description": "Not the operator key"}},
    )
    async def reconcile_now() -> ReconcileOut:
        result = await reconciler.run_once()
        if result is None:
            raise DomainError("the reconciler pass failed; see the logs", code="reconcile_failed", status=503)
        return ReconcileOut(taken=result.taken, ended=result.ended, still_overdue=result.still_overdue)

    @app.get(
        "/ops/payment-mismatches",
        response_model=list[PaymentMismatchOut],
        tags=["operators"],
        summary="Payments that were not allowed to move their order, newest first (bearer: the operator key)",
        dependencies=[Depends(operator)],
        responses={401: {"description": "No operator key"}, 403: {"description": "Not the operator key"}},
    )
    async def payment_mismatches(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[PaymentMismatchOut]:
        rows = await mismatches.list_payment_mismatches(runtime.pool, limit)
        return [PaymentMismatchOut(**vars(row)) for row in rows]

    @app.post("/webhooks/stripe", response_model=WebhookAck, tags=["stripe"], summary="Stripe's signed events")
    async def stripe_webhook(
        request: Request, stripe_signature: str | None = Header(default=None, alias="Stripe-Signature")
    ) -> WebhookAck:
        payload = await request.body()
        event: dict[str, Any] | None = None
        errors: list[ValueError] = []
        # One secret, or the new and the old one while a secret is rolled: a signature by either is accepted.
        for secret in settings.stripe_webhook_secrets:
            try:
                event = verify_webhook(payload, stripe_signature, secret, settings.stripe_webhook_tolerance_s)
                break
            except ValueError as exc:
                errors.append(exc)
        if event is None:
            metrics.WEBHOOKS.labels("unknown", "rejected").inc()
            raise DomainError(str(errors[0] if errors else "no webhook secret is set"), code="invalid_webhook")
        outcome = await webhooks.handle_stripe_event(runtime.pool, payments, settings, event)
        metrics.WEBHOOKS.labels(str(event.get("type", "unknown"))[:100], outcome).inc()
        log.info("stripe webhook", stripe_event_id=event.get("id"), event_type=event.get("type"), outcome=outcome)
        return WebhookAck(received=True, outcome=outcome)

    # Buying needs no login: its own limit per client. Stripe's events are never throttled (signed, and Stripe
    # retries what is refused, from addresses shared by many shops).
    ratelimit.limit_routes(app, {"POST /orders": ratelimit.ORDERS, "POST /webhooks/stripe": ratelimit.EXEMPT})
    return app
