"""Saved cards: the buyer's Stripe Customer (made lazily), whose is a PaymentMethod, list and remove cards.

The rules are in ``checkout.cards``. Stripe is never called inside a database transaction: the attempt at a
Customer is counted and committed first, Stripe is called, and its answer recorded in a new transaction (a
concurrent attempt that recorded one first wins; with the same idempotency key it is the same Customer).

Every route answers as the other buyer-owned ones do: no credential 401, an unknown or revoked one 401, another
buyer's card 404 (whether it exists is private); Stripe unreachable 503 (nothing done).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import asyncpg
import structlog
from tweetshop_platform.errors import DomainError, NotFound, Unprocessable
from tweetshop_platform.uow import unit_of_work

from .. import cards, repository
from ..gateway import PaymentDeclined, PaymentProviderUnavailable
from . import buyers

log = structlog.get_logger(__name__)


@runtime_checkable
class CardGateway(Protocol):
    """What saved cards need from the payment provider (``gateway.StripeGateway``)."""

    async def retrieve_payment_method(self, payment_method_id: str) -> cards.PaymentMethodFacts: ...

    async def create_customer(self, buyer_id: str) -> str: ...

    async def find_customer(self, buyer_id: str) -> str | None: ...

    async def list_cards(self, customer_id: str) -> list[cards.SavedCard]: ...

    async def detach_payment_method(self, payment_method_id: str) -> None: ...


def _unavailable() -> DomainError:
    return DomainError(
        "the payment provider did not answer; nothing was done, try again",
        code="payment_provider_unavailable",
        status=503,
    )


def _no_such_card() -> NotFound:
    # One answer for a card that does not exist and another buyer's: whether it exists is private.
    return NotFound("no such saved card (or not yours)", code="payment_method_not_found")


async def ensure_customer(pool: asyncpg.Pool, gateway: CardGateway, buyer_id: str) -> str:
    """The buyer's Stripe Customer, made now if it has none (never inside a transaction; found again after a
    crash or a lost answer by ``metadata.buyer_id`` before another is made)."""
    async with unit_of_work(pool) as uow:
        recorded, earlier_attempts = await repository.count_stripe_customer_attempt(uow.conn, buyer_id)
    if recorded is not None:
        return recorded
    try:
        found = await gateway.find_customer(buyer_id) if earlier_attempts else None
        customer_id = found or await gateway.create_customer(buyer_id)
    except PaymentProviderUnavailable:
        raise _unavailable() from None
    except PaymentDeclined as refused:  # our own request refused: nothing a buyer can fix
        log.error("stripe refused to create a customer", error=refused.message)
        raise _unavailable() from None
    if not cards.CUSTOMER_ID.match(customer_id):
        log.error("stripe answered an unexpected customer id")
        raise _unavailable()
    async with unit_of_work(pool) as uow:
        stored = await repository.record_stripe_customer(uow.conn, buyer_id, customer_id)
    if stored is None:  # the account was deleted meanwhile
        raise _no_such_card()
    if stored == customer_id:
        log.info("stripe customer recorded", buyer_id=buyer_id, found_again=found is not None)
    return stored


async def _customer_of(pool: asyncpg.Pool, buyer_id: str) -> str | None:
    async with pool.acquire() as conn:
        return await repository.buyer_stripe_customer(conn, buyer_id)


async def _facts(gateway: CardGateway, payment_method_id: str) -> cards.PaymentMethodFacts:
    """The PaymentMethod at Stripe; 404 when Stripe knows none by this id."""
    if not cards.PAYMENT_METHOD_ID.match(payment_method_id):
        raise _no_such_card()
    try:
        return await gateway.retrieve_payment_method(payment_method_id)
    except PaymentDeclined:
        raise _no_such_card() from None
    except PaymentProviderUnavailable:
        raise _unavailable() from None


async def payment_customer_for(
    pool: asyncpg.Pool, gateway: CardGateway, account: buyers.Account, payment_method_id: str, *, save_card: bool
) -> str | None:
    """Before a signed-in buyer's order is placed: the Customer its PaymentIntent is made for (None: none).

    The PaymentMethod is asked of Stripe, never taken from the client: the buyer's own saved card pays on the
    buyer's Customer; a fresh card pays without one, or on it when the buyer asks to save it (the Customer is
    made then); another buyer's card is 404 and nothing is placed, so nothing can be charged.
    """
    facts = await _facts(gateway, payment_method_id)
    if facts.card is None:
        raise Unprocessable("only cards can be used here", code="payment_method_not_a_card")
    mine = await _customer_of(pool, account.id)
    owner = cards.ownership(facts.customer, mine)
    if owner == "foreign":
        log.warning("refused another customer's payment method", buyer_id=account.id)
        raise _no_such_card()
    if owner == "saved":
        return mine
    if save_card:
        return await ensure_customer(pool, gateway, account.id)
    return None


async def list_cards(pool: asyncpg.Pool, gateway: CardGateway, credential: str) -> list[cards.SavedCard]:
    """The buyer's saved cards, as Stripe keeps them (none before the first one is saved)."""
    account = await buyers.authenticate_pool(pool, credential)
    customer_id = await _customer_of(pool, account.id)
    if customer_id is None:
        return []
    try:
        return await gateway.list_cards(customer_id)
    except (PaymentProviderUnavailable, PaymentDeclined):
        raise _unavailable() from None


async def remove_card(pool: asyncpg.Pool, gateway: CardGateway, credential: str, payment_method_id: str) -> None:
    """Detach one of the buyer's saved cards at Stripe (it can never be charged again); 404 unless it is theirs."""
    account = await buyers.authenticate_pool(pool, credential)
    customer_id = await _customer_of(pool, account.id)
    if customer_id is None:
        raise _no_such_card()
    facts = await _facts(gateway, payment_method_id)
    if cards.ownership(facts.customer, customer_id) != "saved":
        raise _no_such_card()
    try:
        await gateway.detach_payment_method(payment_method_id)
    except PaymentDeclined:  # detached meanwhile
        raise _no_such_card() from None
    except PaymentProviderUnavailable:
        raise _unavailable() from None
    log.info("saved card removed", buyer_id=account.id)
