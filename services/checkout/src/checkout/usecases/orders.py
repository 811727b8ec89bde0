"""Orders: a buyer places one (once per Idempotency-Key), reads it, and cancels it while it is not paid."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from tweetshop_contracts import utc_now
from tweetshop_platform.errors import Conflict, DomainError, NotFound, TooManyRequests, Unprocessable
from tweetshop_platform.uow import unit_of_work

from .. import access, accounts, cards, domain, metrics, repository
from ..config import CheckoutSettings
from ..domain import Order, PurchaseRequest
from ..gateway import PaymentDeclined, PaymentGateway, PaymentProviderUnavailable
from . import buyers
from .payments import apply_payment_outcome, cancel_at_stripe

log = structlog.get_logger(__name__)

_PURCHASE_ERRORS: dict[str, type[DomainError]] = {
    "unknown_product": NotFound,
    "product_unavailable": Conflict,
    "insufficient_stock": Conflict,
    "tweet_product_mismatch": Unprocessable,
}


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    access_token: str
    replayed: bool
    # The new order as leased to this process for its payment (place_order's ``lease_s``): hand it to the worker.
    claimed: repository.ClaimedOrder | None = None


def _replay(found: repository.IdempotentOrder, request_hash: str, idempotency_key: str) -> PlacedOrder:
    if found.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was already used for a different order; use a new key for a new order",
            code="idempotency_key_reused",
            order_id=str(found.order.id),
        )
    token = access.unseal_token(found.access_token_sealed, idempotency_key, found.order.id)
    return PlacedOrder(found.order, token, replayed=True)


_UNPAID_WHAT = {"buyer": "this buyer", "payment_method": "this card", "address": "this shipping address"}


def _too_many_unpaid(full: str, settings: CheckoutSettings) -> TooManyRequests:
    """429: the buyer, the card or the address (``full``) already has ``unpaid_orders_cap`` orders waiting for
    payment. Unpaid orders hold stock: without a cap, a few hundred of them keep any product sold out."""
    return TooManyRequests(
        f"{_UNPAID_WHAT[full]} already has {settings.unpaid_orders_cap} orders waiting for payment: "
        "finish paying or cancel one of them first",
        code="too_many_unpaid_orders",
        retry_after_s=min(settings.payment_recheck_interval_s, 60),
        limit=full,
    )


@dataclass(frozen=True)
class Checked:
    """What ``check_purchase`` read: the Idempotency-Key already names an order (``key_used``: the caller replays
    it, nothing else was checked), or the product and the purchase's price."""

    key_used: bool
    product: domain.ProductView | None = None
    price: domain.Price | None = None
    allocation_generation: int | None = None  # of checkout's allocation of the product, if it has one


async def check_purchases(
    conn: asyncpg.Connection,
    settings: CheckoutSettings,
    purchases: Sequence[tuple[PurchaseRequest, str]],
    *,
    key_free: bool = False,
    signed_in: bool = False,
) -> list[Checked | DomainError]:
    """Everything that can refuse each purchase (with its Idempotency-Key's hash), before any transaction, in one
    statement for all of them: the keys' lookups, the product net of this checkout's claims, the tweet, the cards,
    the unpaid-order cap when it is on. Each purchase gets what it was read to be, in order: ``Checked``, or the
    refusal it meets (``DomainError``: sold out, unknown product, too many unpaid orders...), decided in the same
    order as one at a time. Every purchase must be of one product through one tweet.

    ``key_free``: the caller knows the key names no order any more (it looked), so a taken key is not reported
    again. ``signed_in``: the buyer presented their credential (whose card it is was then asked of Stripe,
    ``cards.payment_customer_for``); without one, a card saved on a buyer's Customer is refused as if it did not
    exist, whoever learnt its id: real Stripe would not confirm it without that Customer, localstripe would
    charge it. (Stripe's test tokens, ``pm_card_visa`` and the like, are a new card at each use: never looked up.)

    In a drop thousands of buyers are told "sold out" here; checkout's ``refusals`` answers them ahead of FastAPI
    through this same function, the purchases that wait together in one statement. Nothing read here is locked,
    as before (READ COMMITTED): catalog decides every reservation, and the key is unique in the table.
    """
    first = purchases[0][0]
    if any(p.product_id != first.product_id or p.tweet_id != first.tweet_id for p, _ in purchases):
        raise ValueError("purchases checked together must be of one product through one tweet")
    asked = [
        repository.PurchaseAsked(
            key_hash=key_hash,
            saved_card=None if signed_in or not cards.may_be_saved(p.payment_method) else p.payment_method,
            buyer_id=p.buyer.id,
            payment_method=p.payment_method,
            line1=p.shipping.line1,
            city=p.shipping.city,
            country=p.shipping.country,
        )
        for p, key_hash in purchases
    ]
    views = await repository.get_purchase_views(
        conn,
        first.product_id,
        first.tweet_id,
        asked,
        quantity=max(p.quantity for p, _ in purchases),
        unpaid_cap=settings.unpaid_orders_cap,
    )
    return [
        _decide(settings, request, seen, key_free=key_free) for (request, _), seen in zip(purchases, views, strict=True)
    ]


def _decide(
    settings: CheckoutSettings, request: PurchaseRequest, seen: repository.PurchaseView, *, key_free: bool
) -> Checked | DomainError:
    if seen.key_used and not key_free:
        return Checked(key_used=True)
    if seen.saved_card:
        return NotFound("no such payment method (or not yours)", code="payment_method_not_found")
    if seen.unpaid_full is not None:
        return _too_many_unpaid(seen.unpaid_full, settings)
    try:
        price = domain.price_purchase(seen.product, seen.tweet, request)
    except domain.PurchaseRefused as refused:
        return _PURCHASE_ERRORS.get(refused.code, Conflict)(refused.message, code=refused.code)
    return Checked(key_used=False, product=seen.product, price=price, allocation_generation=seen.allocation_generation)


async def check_purchase(
    conn: asyncpg.Connection,
    settings: CheckoutSettings,
    request: PurchaseRequest,
    key_hash: str,
    *,
    key_free: bool = False,
    signed_in: bool = False,
) -> Checked:
    """``check_purchases`` of one purchase, as the route asks it: raises the refusal (and counts a refusal by the
    unpaid-order cap: the route answers it)."""
    (checked,) = await check_purchases(conn, settings, [(request, key_hash)], key_free=key_free, signed_in=signed_in)
    if isinstance(checked, DomainError):
        if isinstance(checked, TooManyRequests) and checked.code == "too_many_unpaid_orders":
            metrics.UNPAID_CAP_REFUSALS.labels(checked.details["limit"]).inc()
        raise checked
    return checked


async def place_order(
    pool: asyncpg.Pool,
    settings: CheckoutSettings,
    request: PurchaseRequest,
    request_hash: str,
    idempotency_key: str,
    correlation_id: str,
    account: buyers.Account | None = None,
    *,
    lease_s: float | None = None,
) -> PlacedOrder:
    """One order per Idempotency-Key: a new pending order plus OrderPlaced, or the order this exact request made.

    With ``account`` (the buyer presented a credential) the order belongs to that buyer: ``request.buyer.id``
    must already be the account's id (``for_account``), and its access token is kept in the buyer's vault.
    With ``lease_s`` (the caller's payment worker has room), a new order reserved from the allocation comes back
    leased to this process (``PlacedOrder.claimed``, ``repository.insert_order``).
    """
    key_hash = access.idempotency_key_hash(idempotency_key)
    async with pool.acquire() as conn:
        signed_in = account is not None
        checked = await check_purchase(conn, settings, request, key_hash, signed_in=signed_in)
        if checked.key_used:
            found = await repository.get_order_by_key(conn, key_hash)
            if found is not None:
                return _replay(found, request_hash, idempotency_key)
            checked = await check_purchase(conn, settings, request, key_hash, key_free=True, signed_in=signed_in)
        product, price = checked.product, checked.price
        assert price is not None
        order, placed = domain.place(uuid.uuid4(), request, price, correlation_id, utc_now())
        token, token_hash = access.new_access_token()
        generation = checked.allocation_generation
        from_allocation = None if generation is None else domain.reserved_from_allocation(order, placed, generation)
        try:
            # One statement, no transaction: the order, the units it takes from the allocation, and its OrderPlaced.
            inserted = await repository.insert_order(
                conn,
                order,
                key_hash=key_hash,
                request_hash=request_hash,
                token_hash=token_hash,
                token_sealed=access.seal_token(token, idempotency_key, order.id),
                placed=placed,
                stock_version_seen=product.version if product is not None else None,
                allocation_generation=generation,
                placed_from_allocation=None if from_allocation is None else from_allocation[1],
                account=(None if account is None else (account.id, buyers.vault_order_token(account, order.id, token))),
                lease_s=lease_s,
            )
        except repository.KeyTaken:
            # A concurrent request with the same key committed first: its row is visible now.
            twin = await repository.get_order_by_key(conn, key_hash)
            assert twin is not None
            return _replay(twin, request_hash, idempotency_key)
        if inserted.allocation_generation is not None:
            assert from_allocation is not None
            order = from_allocation[0]
    metrics.count_transition(None, "pending")
    log.info(
        "order placed",
        order_id=str(order.id),
        amount_minor=order.amount_minor,
        currency=order.currency,
        reserved_from_allocation=order.stock_reserved,
    )
    return PlacedOrder(order, token, replayed=False, claimed=inserted.claimed)


def for_account(request: PurchaseRequest, account: buyers.Account | None) -> PurchaseRequest:
    """The request as placed: with a credential, the buyer id is the account's, whatever the body said; without
    one, the body's id, which may not be of the accounts' form (no one orders in an account's name without its
    credential)."""
    if account is not None:
        return dataclasses.replace(request, buyer=domain.Buyer(id=account.id, email=request.buyer.email))
    if accounts.is_account_buyer_id(request.buyer.id):
        raise Unprocessable(
            "buyer ids starting with ba_ belong to buyer accounts: send the buyer credential "
            "(Authorization: Bearer tsb_...) instead",
            code="account_buyer_id",
        )
    return request


def _refuse_unless_token(presented: str, token_hash: str | None) -> None:
    """NotFound unless ``presented`` is the order's access token: no order answers the same as a wrong token."""
    if token_hash is None or not access.secret_matches(presented, token_hash):
        raise NotFound("no such order (or not yours)", code="order_not_found")


async def _authorize_buyer(conn: asyncpg.Connection, order_id: uuid.UUID, access_token: str) -> str:
    """NotFound unless ``access_token`` is the order's, or the credential of the buyer it belongs to: whether an
    order exists is private (no order answers the same as a wrong token). The order's own access token (for the
    tracking link): the one presented, or the one opened from the buyer's vault ("" when there is none)."""
    if accounts.is_buyer_credential(access_token):
        return await buyers.authorize_order(conn, order_id, access_token)
    _refuse_unless_token(access_token, await repository.get_access_token_hash(conn, order_id))
    return access_token


async def get_order(pool: asyncpg.Pool, order_id: uuid.UUID, access_token: str) -> Order:
    """The order, for the bearer of its access token (or its buyer's credential)."""
    return (await get_order_with_token(pool, order_id, access_token))[0]


async def get_order_with_token(pool: asyncpg.Pool, order_id: uuid.UUID, bearer: str) -> tuple[Order, str]:
    """The order, for the bearer of its access token or its buyer's credential, with the order's access token
    (for the tracking link; "" when the buyer's vault has none). With the order's own token (a buyer following
    the order page or its link: the page most often read), one statement reads the order and the token's hash,
    and the order is shown only when the token matches."""
    async with pool.acquire() as conn:
        if accounts.is_buyer_credential(bearer):
            token = await buyers.authorize_order(conn, order_id, bearer)
            order = await repository.get_order(conn, order_id)
            assert order is not None
            return order, token
        found = await repository.get_order_and_token_hash(conn, order_id)
    _refuse_unless_token(bearer, found[1] if found else None)
    assert found is not None
    return found[0], bearer


def _refused(refused: domain.CancelRefused, order: Order) -> Conflict:
    return Conflict(refused.message, code=refused.code, status_now=order.status)


async def cancel_order(
    pool: asyncpg.Pool, gateway: PaymentGateway, settings: CheckoutSettings, order_id: uuid.UUID, access_token: str
) -> Order:
    """The buyer gives up an order not paid yet: nothing is charged, OrderCancelled releases its stock."""
    async with unit_of_work(pool) as uow:
        await _authorize_buyer(uow.conn, order_id, access_token)
        order = await repository.get_order(uow.conn, order_id, for_update=True)
        assert order is not None
        try:
            plan = domain.plan_buyer_cancel(order)
        except domain.CancelRefused as refused:
            raise _refused(refused, order) from None
        if plan == "already_cancelled":
            return order
        cancelled: Order | None = None
        if plan == "cancel_now":
            cancelled, event = domain.cancel(order, domain.CANCELLED_BY_BUYER, utc_now())
            await repository.save_order(uow.conn, cancelled, next_payment_step_in=None)
            uow.publish(event)
    if cancelled is not None:
        metrics.count_transition(order.status, cancelled.status)
        log.info("order cancelled by the buyer", order_id=str(order.id))
        return cancelled
    assert order.payment_intent_id is not None
    try:
        outcome = await cancel_at_stripe(gateway, order.payment_intent_id, domain.CANCELLED_BY_BUYER)
    except PaymentProviderUnavailable:
        raise DomainError(
            "the payment provider did not answer; nothing was cancelled, try again",
            code="payment_provider_unavailable",
            status=503,
        ) from None
    except PaymentDeclined as declined:
        raise Conflict(f"Stripe refused the cancellation: {declined.message}", code="cancel_refused") from None
    async with unit_of_work(pool) as uow:
        change = await apply_payment_outcome(uow, order.id, outcome, settings, source="buyer_cancel")
        current = await repository.get_order(uow.conn, order.id)
    assert current is not None
    if change is not None:
        metrics.count_transition(change.before, change.after)
    if current.status == "cancelled":
        log.info("order cancelled by the buyer", order_id=str(order.id), payment_intent_id=order.payment_intent_id)
        return current
    try:
        domain.plan_buyer_cancel(current)
    except domain.CancelRefused as refused:
        raise _refused(refused, current) from None
    raise Conflict(
        "the payment is being processed right now; try again in a few seconds",
        code="payment_in_progress",
        status_now=current.status,
    )
