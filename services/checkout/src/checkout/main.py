"""checkout: orders, Stripe payments, refunds. The only wiring: HTTP routes, subscriptions, workers, runtime."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

import structlog
from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response, status
from starlette.middleware import Middleware
from tweetshop_contracts import topics
from tweetshop_platform import faults, ratelimit, telemetry
from tweetshop_platform.errors import DomainError, Unprocessable
from tweetshop_platform.openapi import MERCHANT_API_KEY, OPERATOR_KEY, ORDER_ACCESS_TOKEN, operator_dependency
from tweetshop_platform.runtime import ServiceRuntime, create_service_app

from . import (
    accounts,
    address_routes,
    buyer_routes,
    card_routes,
    deletion_routes,
    domain,
    handlers,
    metrics,
    refusals,
)
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
from .usecases import buyers, cards, mismatches, orders, refunds, webhooks
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
    # Saved cards live at Stripe: a gateway that does not do them (a unit test's fake) leaves them to Stripe's.
    card_gateway: cards.CardGateway
    if isinstance(payments, cards.CardGateway):
        card_gateway = payments
    else:
        stripe_cards = StripeGateway(settings)
        runtime.add_shutdown_hook(stripe_cards.aclose)
        card_gateway = stripe_cards
    worker = PaymentWorker(lambda: runtime.background_pool, payments, settings)
    reconciler = Reconciler(lambda: runtime.background_pool, payments, settings)

    # Topics, groups and their settings: tweetshop_contracts.system; here only each group's handler.
    runtime.subscribe_declared(
        {
            "merchants": handlers.on_merchant_event,
            "products": handlers.on_product_event,
            "tweets": handlers.on_buyable_tweet,
            "reservations": handlers.on_reservation_event,
            "allocations": handlers.on_allocation_event,
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
    admission = app.state.purchase_admission = refusals.Admission(settings.database_pool_max)

    @app.post(
        "/orders",
        operation_id="placeOrder",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=OrderCreated,
        tags=["orders"],
        summary="Buy from a tweet",
        responses={
            200: {"description": "The same request again (same Idempotency-Key): the same order"},
            400: {"description": "No Idempotency-Key, or one too short or long (`idempotency_key_required`)"},
            404: {
                "description": "Unknown product or tweet (`unknown_product`), or a payment_method that is not the "
                "buyer's: for a signed-in buyer, one not theirs; without a credential, a card saved to a buyer "
                "account (`payment_method_not_found`)"
            },
            409: {
                "description": "Sold out or no longer on sale, or this Idempotency-Key was used for another order "
                "(`insufficient_stock`, `product_unavailable`, `idempotency_key_reused`)"
            },
            422: {
                "description": "An invalid body, or a tweet that does not sell this product, or `save_card` without "
                "a buyer credential (`save_card_needs_account`)"
            },
            429: {
                "description": "Too many orders of this buyer, card or address wait for payment (Retry-After), "
                "or too many requests from this client"
            },
            503: {
                "description": "Stripe did not answer whose card this is (a signed-in buyer's order; "
                "`payment_provider_unavailable`): nothing was placed, try again"
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
        credential: Annotated[str | None, Depends(buyer_routes.BUYER_CREDENTIAL_OPTIONAL)] = None,
    ) -> OrderCreated:
        problem = idempotency_key_problem(idempotency_key)
        if problem is not None or idempotency_key is None:
            raise DomainError(problem or "missing Idempotency-Key", code="idempotency_key_required")
        # With a buyer credential (tsb_...) the order is the buyer's: its buyer id is the account's, never the
        # body's; a revoked one is a 401. Any other bearer is no buyer's: an anonymous order, as before accounts.
        account = None
        if credential is not None and accounts.is_buyer_credential(credential):
            account = await buyers.authenticate_pool(runtime.pool, credential)
        canonical = body.canonical() + (f"|account:{account.id}" if account is not None else "")
        purchase = orders.for_account(body.to_request(), account)
        if account is not None:
            # Whose card this is, asked of Stripe (never the client's word): saved, fresh, or another buyer's (404).
            customer = await cards.payment_customer_for(
                runtime.pool, card_gateway, account, body.payment_method, save_card=body.save_card
            )
            purchase = dataclasses.replace(purchase, payment_customer=customer)
        elif body.save_card:
            raise Unprocessable(
                "only a signed-in buyer can save a card: send the buyer credential (Authorization: Bearer tsb_...)",
                code="save_card_needs_account",
            )
        # Admitted in turn (refusals.Admission): an anonymous purchase was, ahead of FastAPI; a signed-in one is
        # here, after its Stripe round trip.
        async with admission.enter(request.scope):
            # With room in this process's payment worker, an order reserved from the allocation is inserted leased
            # to it and handed over below: no claim (worker.PaymentWorker.promise).
            promised = worker.promise()
            try:
                placed = await orders.place_order(
                    runtime.pool,
                    settings,
                    purchase,
                    domain.request_fingerprint(canonical),
                    idempotency_key,
                    str(request.state.correlation_id),
                    account,
                    lease_s=settings.payment_lease_s if promised else None,
                )
            except BaseException:
                if promised:
                    worker.release()  # an order inserted leased before this keeps its lease, then is claimed
                raise
        if placed.order.stock_reserved and not placed.replayed and telemetry.active:
            # Reserved from the allocation: due for payment now; the payment continues this request's trace.
            telemetry.remember(topics.CHECKOUT_ORDERS, str(placed.order.id))
        if placed.claimed is not None:
            # Chaos tests only (off by default): die with the order placed leased and not handed over.
            faults.maybe_crash("checkout_after_order_leased")
            worker.start(placed.claimed)
        elif promised:
            worker.release()
        if placed.replayed:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
        elif placed.order.stock_reserved and placed.claimed is None:
            worker.wake()
        order = placed.order
        return OrderCreated(
            id=order.id,
            status=order.status,
            access_token=placed.access_token,
            amount_minor=order.amount_minor,
            currency=order.currency,
        )

    @app.get(
        "/orders/{order_id}",
        operation_id="getOrder",
        response_model=OrderOut,
        tags=["orders"],
        summary="The order, for its buyer (its access token, or the credential of the buyer it belongs to)",
        dependencies=[Depends(buyer_routes.BUYER_CREDENTIAL)],
    )
    async def get_order(order_id: uuid.UUID, token: Annotated[str, Depends(ORDER_ACCESS_TOKEN)]) -> OrderOut:
        # The tracking link carries the order's own access token (opened from the buyer's vault for a credential).
        order, shown = await orders.get_order_with_token(runtime.pool, order_id, token)
        return OrderOut.of(order, access_token=shown, tracking_base_url=settings.tracking_public_url)

    @app.post(
        "/orders/{order_id}/refund",
        operation_id="refundOrder",
        response_model=OrderOut,
        tags=["orders"],
        summary="Refund a paid order (all that is left, or amount_minor); bearer: its merchant's API key",
        responses={
            401: {"description": "No key"},
            403: {"description": "Not the key of the order's merchant (a buyer cannot refund their own order)"},
            404: {"description": "No such order"},
            409: {"description": "Not paid, or more than is left to refund"},
            503: {"description": "Stripe did not answer: the refund is recorded and completed later"},
        },
        # The merchant's API key, or the operator key: the same bearer, told apart by the use case.
        dependencies=[Depends(OPERATOR_KEY)],
    )
    async def refund_order(
        order_id: uuid.UUID,
        token: Annotated[str, Depends(MERCHANT_API_KEY)],
        body: Annotated[RefundIn | None, Body()] = None,
    ) -> OrderOut:
        amount = body.amount_minor if body is not None else None
        order = await refunds.refund_order(runtime.pool, payments, settings, order_id, token, amount)
        # The merchant's view: no tracking link (it would carry the merchant's key, and the map is the buyer's).
        return OrderOut.of(order, access_token="", tracking_base_url=settings.tracking_public_url)

    @app.post(
        "/orders/{order_id}/cancel",
        operation_id="cancelOrder",
        response_model=OrderOut,
        tags=["orders"],
        summary="The buyer cancels an order not paid yet (nothing is charged, the stock goes back on sale)",
        responses={
            409: {"description": "Paid, failed, or a payment attempt is in flight right now"},
            503: {"description": "Stripe did not answer: nothing was cancelled, try again"},
        },
        dependencies=[Depends(buyer_routes.BUYER_CREDENTIAL)],
    )
    async def cancel_order(order_id: uuid.UUID, token: Annotated[str, Depends(ORDER_ACCESS_TOKEN)]) -> OrderOut:
        order = await orders.cancel_order(runtime.pool, payments, settings, order_id, token)
        # Never the buyer credential in a tracking link: the order's own token, from the buyer's vault.
        shown = token
        if accounts.is_buyer_credential(token):
            shown = (await orders.get_order_with_token(runtime.pool, order_id, token))[1]
        return OrderOut.of(order, access_token=shown, tracking_base_url=settings.tracking_public_url)

    operator = operator_dependency(settings.operator_key)

    @app.post(
        "/ops/reconcile",
        operation_id="runReconciler",
        response_model=ReconcileOut,
        tags=["operators"],
        summary="Run one reconciler pass now (bearer: the operator key): orders open past their deadline end",
        dependencies=[Depends(operator)],
        responses={
            401: {"description": "No operator key"},
            403: {"description": "Not the operator key"},
            503: {"description": "The pass failed (`reconcile_failed`); see the logs"},
        },
    )
    async def reconcile_now() -> ReconcileOut:
        result = await reconciler.run_once()
        if result is None:
            raise DomainError("the reconciler pass failed; see the logs", code="reconcile_failed", status=503)
        return ReconcileOut(taken=result.taken, ended=result.ended, still_overdue=result.still_overdue)

    @app.get(
        "/ops/payment-mismatches",
        operation_id="listPaymentMismatches",
        response_model=list[PaymentMismatchOut],
        tags=["operators"],
        summary="Payments that were not allowed to move their order, newest first (bearer: the operator key)",
        dependencies=[Depends(operator)],
        responses={401: {"description": "No operator key"}, 403: {"description": "Not the operator key"}},
    )
    async def payment_mismatches(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[PaymentMismatchOut]:
        rows = await mismatches.list_payment_mismatches(runtime.pool, limit)
        return [PaymentMismatchOut(**vars(row)) for row in rows]

    @app.post(
        "/webhooks/stripe",
        operation_id="receiveStripeWebhook",
        response_model=WebhookAck,
        tags=["stripe"],
        summary="Stripe's signed events (no bearer: the Stripe-Signature header signs the body)",
        responses={
            400: {"description": "No valid Stripe-Signature for this body (`invalid_webhook`)"},
            503: {"description": "Stripe could not be asked about the payment: Stripe delivers the event again"},
        },
    )
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

    buyer_routes.install(app, runtime, settings)
    card_routes.install(app, runtime, card_gateway)
    address_routes.install(app, runtime)
    deletion_routes.install(app, runtime, card_gateway)

    # Buying needs no login: its own limit per client. Stripe's events are never throttled (signed, and Stripe
    # retries what is refused, from addresses shared by many shops).
    ratelimit.limit_routes(app, {"POST /orders": ratelimit.ORDERS, "POST /webhooks/stripe": ratelimit.EXEMPT})
    # A drop's "sold out" answers ahead of FastAPI (refusals.py): the innermost of the service's middlewares, so
    # the body limit, correlation ids, request metrics and traces still see every request.
    app.user_middleware.append(
        Middleware(refusals.SoldOutRefusals, service=app, settings=settings, admission=admission)
    )
    return app
