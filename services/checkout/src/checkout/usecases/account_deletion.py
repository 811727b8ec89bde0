"""A buyer deletes the account: ``DELETE /buyers/me``.

What goes, and what stays (docs/topics.md, "Personal data"):

- **At Stripe**: the buyer's Customer is deleted, and with it every card saved on it (Stripe detaches them): no
  saved card can be charged again. First, outside any transaction, so that a Stripe outage answers 503 with
  nothing changed, and a retry is harmless (a Customer already gone counts as deleted).
- **In checkout**: the account row, every credential (every device is signed out) and the live link code.
- **The buyer's orders stay**, for the merchant's records (what was sold, for how much, when, to which country
  and city, refunds), with the buyer's personal data removed: the e-mail, the recipient's name and the street
  are blanked, the delivery point is kept only to one decimal of a degree (about 10 km: the city, not the door),
  the order no longer belongs to an account, and its vaulted access token is dropped (no device can open it any
  more). ``buyer_erased_at`` says when. The order's opaque ``buyer_id`` (``ba_…``) stays: it names nobody once
  the account is gone, and it is what the topics already carried.
- **Other services** hear ``BuyerDeleted`` (checkout.buyers.v1), in the same transaction: feed drops the buyer's
  follows and credential verifiers. tracking keeps no buyer id, but it keeps each shipment's destination point
  and the courier's track by order: ``OrderBuyerErased`` (checkout.orders.v1), one per order kept, in the same
  transaction, has it erase them.

An order still being paid (``pending``, ``requires_action``) needs its address for the shipment: the deletion
answers 409 ``orders_in_progress`` until it is paid, failed or cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog
from tweetshop_contracts import OrderBuyerErased
from tweetshop_platform.errors import Conflict, DomainError
from tweetshop_platform.uow import unit_of_work

from .. import buyer_events
from ..domain import PRODUCER
from ..gateway import PaymentDeclined, PaymentProviderUnavailable, StripeGateway
from .buyers import authenticate

log = structlog.get_logger(__name__)

IN_PROGRESS = ("pending", "requires_action")


class CustomerEraser(Protocol):
    """Finds and deletes a buyer's Stripe Customer (and so its saved cards); a Customer already gone is not an
    error."""

    async def find_customer(self, buyer_id: str) -> str | None: ...

    async def delete_customer(self, customer_id: str) -> None: ...


class StripeCustomers:
    """``CustomerEraser`` through checkout's ``StripeGateway`` (its client, timeouts, metrics and spans)."""

    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway

    async def find_customer(self, buyer_id: str) -> str | None:
        return await self._gateway.find_customer(buyer_id)

    async def delete_customer(self, customer_id: str) -> None:
        try:
            await self._gateway.delete_customer(customer_id)
        except PaymentDeclined as refused:  # an invalid request: the Customer is already gone
            log.info("stripe customer already gone", reason=refused.message)


@dataclass(frozen=True)
class Deleted:
    """What a deletion did."""

    buyer_id: str
    orders_kept: int
    customer_deleted: bool


def _buyer_erased(order: asyncpg.Record) -> OrderBuyerErased:
    """The order stays, its buyer is erased: readers of checkout.orders.v1 erase what they keep of the buyer."""
    return OrderBuyerErased(
        producer=PRODUCER,
        correlation_id=order["correlation_id"],
        order_id=order["id"],
        product_id=order["product_id"],
        quantity=order["quantity"],
    )


def _in_progress(count: int) -> Conflict:
    return Conflict(
        f"{count} of your orders is still being paid: delete the account once it is paid, failed or cancelled",
        code="orders_in_progress",
        orders=count,
    )


async def _orders_in_progress(conn: asyncpg.Connection, buyer_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM orders WHERE buyer_account = $1 AND status = ANY($2::text[])",
        buyer_id,
        list(IN_PROGRESS),
    )
    return count


async def _customer_of(conn: asyncpg.Connection, buyer_id: str) -> tuple[str | None, int]:
    """The buyer's recorded Stripe Customer and how many attempts to make one were counted (saved cards, 0008)."""
    row = await conn.fetchrow("SELECT stripe_customer_id, stripe_customer_attempts FROM buyers WHERE id = $1", buyer_id)
    return (row["stripe_customer_id"], row["stripe_customer_attempts"]) if row else (None, 0)


async def delete_account(pool: asyncpg.Pool, credential: str, customers: CustomerEraser | None) -> Deleted:
    """Delete the credential's buyer: 401 without a live credential, 409 while an order is being paid, 503 when
    Stripe does not answer (nothing changed then)."""
    async with pool.acquire() as conn:
        account = await authenticate(conn, credential)
        if busy := await _orders_in_progress(conn, account.id):
            raise _in_progress(busy)
        customer_id, attempts = await _customer_of(conn, account.id)
    if customer_id is None and attempts and customers is not None:
        # An attempt to make the Customer may have been cut off before it was recorded: look for it by buyer.
        customer_id = await customers.find_customer(account.id)
    if customer_id is not None:
        if customers is None:
            raise DomainError(
                "saved cards cannot be removed right now; try again", code="payment_provider_unavailable", status=503
            )
        try:
            await customers.delete_customer(customer_id)
        except PaymentProviderUnavailable as exc:
            log.warning("stripe did not delete the customer", error=str(exc))
            raise DomainError(
                "Stripe did not answer: nothing was deleted; try again in a moment",
                code="payment_provider_unavailable",
                status=503,
            ) from exc
    async with unit_of_work(pool) as uow:
        # The row locked: no device is linked, no order placed for the account, no Customer recorded meanwhile.
        locked = await uow.conn.fetchrow("SELECT stripe_customer_id FROM buyers WHERE id = $1 FOR UPDATE", account.id)
        if locked is None:  # deleted by another device meanwhile
            await authenticate(uow.conn, credential)  # 401
        elif locked["stripe_customer_id"] not in (None, customer_id):
            raise Conflict("a card was being saved meanwhile: try again", code="account_changed")
        if busy := await _orders_in_progress(uow.conn, account.id):
            raise _in_progress(busy)
        kept = await uow.conn.fetch(
            """UPDATE orders SET buyer_email = '', ship_name = '', ship_line1 = '',
                   ship_lat = round(ship_lat::numeric, 1)::double precision,
                   ship_lon = round(ship_lon::numeric, 1)::double precision,
                   buyer_account = NULL, access_token_vaulted = NULL, payment_customer = NULL,
                   buyer_erased_at = now(), updated_at = now()
               WHERE buyer_account = $1 RETURNING id, product_id, quantity, correlation_id""",
            account.id,
        )
        # Its credentials and link code go with it (ON DELETE CASCADE).
        await uow.conn.execute("DELETE FROM buyers WHERE id = $1", account.id)
        uow.publish(buyer_events.deleted(account.id))
        for order in kept:  # tracking erases the places it keeps of this order's buyer
            uow.publish(_buyer_erased(order))
    log.info("buyer deleted", buyer_id=account.id, orders_kept=len(kept), customer_deleted=customer_id is not None)
    return Deleted(account.id, len(kept), customer_id is not None)


def customer_eraser(gateway: object) -> CustomerEraser | None:
    """What finds and deletes Customers for ``gateway`` (checkout's card gateway): the Stripe one through
    ``StripeCustomers``, a fake with both methods as it is, else None (a test's fake without cards)."""
    if isinstance(gateway, StripeGateway):
        return StripeCustomers(gateway)
    if callable(getattr(gateway, "delete_customer", None)) and callable(getattr(gateway, "find_customer", None)):
        return gateway  # type: ignore[return-value]
    return None
