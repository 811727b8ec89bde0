"""Catalog rules: stock that is never negative, reservations that move once. Pure, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Literal

from uuid_utils import compat as uuid_utils

ReservationStatus = Literal["reserved", "rejected", "committed", "released", "returned"]


def new_id() -> uuid.UUID:
    """A new merchant or product id: a UUIDv7 (RFC 9562), still just a UUID to every consumer.

    Its first 48 bits are the time it was minted, in Unix milliseconds: feed, which learns merchants and products
    from catalog's topics a moment after catalog answers, reads from the id alone that one it does not know yet
    was created moments ago, and asks the client to retry (503, Retry-After) instead of answering "unknown".
    The rest is a counter (ids minted within one millisecond sort in minting order) and random bits. Ids were
    never secrets (tweets show them; every write needs the merchant's key), and the birth time it reveals is
    the registration or listing time.
    """
    return uuid_utils.uuid7()


@dataclass(frozen=True)
class Product:
    id: uuid.UUID
    merchant_id: uuid.UUID
    title: str
    description: str
    image_url: str | None
    price_minor: int
    currency: str
    stock_available: int
    stock_reserved: int
    stock_sold: int
    status: Literal["active", "delisted"]
    version: int
    # Units ever reserved (never goes down: a release or a sale does not undo that a reservation was made). Every
    # ProductUpdated carries it, so checkout can tell the reservations its copy already counts from the ones it
    # has not heard of yet (checkout's repository.get_product_and_tweet).
    units_reserved_total: int = 0


@dataclass(frozen=True)
class Reservation:
    order_id: uuid.UUID
    product_id: uuid.UUID
    quantity: int
    status: ReservationStatus
    reason: str | None = None


class ReservationRefused(Exception):
    """Stock cannot be reserved; the message says why (shown to the buyer)."""


def reserve(product: Product | None, order_id: uuid.UUID, quantity: int, currency: str) -> tuple[Product, Reservation]:
    """Set stock aside for an order, or raise ReservationRefused."""
    if product is None:
        raise ReservationRefused("unknown product")
    if product.status != "active":
        raise ReservationRefused("product is no longer on sale")
    if currency != product.currency:
        raise ReservationRefused(f"currency {currency} does not match the product's {product.currency}")
    if quantity < 1:
        raise ReservationRefused("quantity must be at least 1")
    if quantity > product.stock_available:
        raise ReservationRefused(f"only {product.stock_available} left in stock, {quantity} asked")
    updated = replace(
        product,
        stock_available=product.stock_available - quantity,
        stock_reserved=product.stock_reserved + quantity,
        version=product.version + 1,
        units_reserved_total=product.units_reserved_total + quantity,
    )
    return updated, Reservation(order_id, product.id, quantity, "reserved")


def commit(product: Product, reservation: Reservation) -> tuple[Product, Reservation]:
    """Reserved stock becomes sold once the order is paid."""
    if reservation.status != "reserved":
        return product, reservation
    updated = replace(
        product,
        stock_reserved=product.stock_reserved - reservation.quantity,
        stock_sold=product.stock_sold + reservation.quantity,
        version=product.version + 1,
    )
    return updated, replace(reservation, status="committed")


def release(product: Product, reservation: Reservation, reason: str) -> tuple[Product, Reservation, bool]:
    """Reserved stock goes back on sale; the flag says whether anything moved (released once, never twice)."""
    if reservation.status != "reserved":
        return product, reservation, False
    updated = replace(
        product,
        stock_available=product.stock_available + reservation.quantity,
        stock_reserved=product.stock_reserved - reservation.quantity,
        version=product.version + 1,
    )
    return updated, replace(reservation, status="released", reason=reason), True


def restock(product: Product, reservation: Reservation, reason: str) -> tuple[Product, Reservation, bool]:
    """Sold goods that came back (a refund with return) go on sale again, once."""
    if reservation.status != "committed":
        return product, reservation, False
    updated = replace(
        product,
        stock_available=product.stock_available + reservation.quantity,
        stock_sold=product.stock_sold - reservation.quantity,
        version=product.version + 1,
    )
    return updated, replace(reservation, status="returned", reason=reason), True
