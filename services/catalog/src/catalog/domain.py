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
    # Units of stock_available allocated to checkout (it reserves from them itself, without asking per order), and
    # the allocation's generation (StockAllocated on catalog.allocations.v1). Setting the stock below what is
    # allocated takes the allocation back: a new generation, and the old one's units are ``stock_returning`` until
    # checkout reserves them for orders it took before it heard (``reserve_allocated``) or gives them back
    # (StockAllocationReturned: ``take_back``). Catalog reserves only the rest (``stock_free``).
    stock_allocated: int = 0
    allocation_generation: int = 0
    stock_returning: int = 0

    @property
    def stock_free(self) -> int:
        """Units on sale that catalog itself may still reserve or allocate."""
        return max(0, self.stock_available - self.stock_allocated - self.stock_returning)


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
    if quantity > product.stock_free:
        raise ReservationRefused(f"only {product.stock_free} left in stock, {quantity} asked")
    updated = replace(
        product,
        stock_available=product.stock_available - quantity,
        stock_reserved=product.stock_reserved + quantity,
        version=product.version + 1,
        units_reserved_total=product.units_reserved_total + quantity,
    )
    return updated, Reservation(order_id, product.id, quantity, "reserved")


@dataclass(frozen=True)
class AllocatedReservation:
    """What recording an order checkout reserved from its allocation did (``reserve_allocated``)."""

    product: Product
    reservation: Reservation
    # Units taken from the free stock: the order said more than its allocation holds (never, unless an event was
    # forged or lost).
    from_free: int
    # Units there was no stock for at all: the merchant set the stock below what checkout had already taken from
    # its allocation before it heard (see the runbook). Reported, never hidden; stock never goes below zero.
    overdrawn: int
    # The order left less stock than the allocation in force: that allocation was taken back (a new generation,
    # to be announced like a restock's), as when the merchant sets the stock below it.
    revoked: bool = False


def allocation_holds(product: Product, generation: int, quantity: int) -> bool:
    """Whether an order checkout says it reserved from the allocation of ``generation`` fits in what catalog
    still counts as out with checkout under it: the allocation in force (``stock_allocated``), or the units of a
    taken-back generation not yet heard of (``stock_returning``). Every order checkout really reserved fits:
    it can take only units catalog counted out and has not heard taken. One that does not fit (a generation
    never issued, generation 0 of a product never allocated, more units than are out) was not reserved from
    anything catalog gave: a forged or corrupt event, decided as any other order (``reserve``), never recorded
    as already reserved."""
    if generation == product.allocation_generation:
        return quantity <= product.stock_allocated
    return 0 <= generation < product.allocation_generation and quantity <= product.stock_returning


def reserve_allocated(product: Product, order_id: uuid.UUID, quantity: int, generation: int) -> AllocatedReservation:
    """Record the reservation checkout made itself, from the allocation of ``generation``: never refused (the order
    is already due for payment). Its units come from the allocation in force, or from the units of a taken-back
    generation still out (``stock_returning``); anything beyond is taken from the free stock, or ``overdrawn``.

    An order of a taken-back generation can leave less stock than the allocation in force (the merchant set the
    stock below what checkout had sold untold, and a later grant is out): that allocation is taken back then too,
    as ``restocked`` does, rather than cut down to the stock. Checkout holds its units until it hears; cut down,
    catalog would no longer count units checkout still sells, and would not recognise their orders
    (``allocation_holds``)."""
    if generation == product.allocation_generation:
        from_allocation, from_returning = min(product.stock_allocated, quantity), 0
    else:
        from_allocation, from_returning = 0, min(product.stock_returning, quantity)
    rest = quantity - from_allocation - from_returning
    from_free = min(product.stock_free, rest)
    overdrawn = max(0, quantity - product.stock_available, rest - from_free)
    available = max(0, product.stock_available - quantity)
    allocated, returning = product.stock_allocated - from_allocation, product.stock_returning - from_returning
    generation_in_force = product.allocation_generation
    revoked = allocated > available
    if revoked:
        generation_in_force, allocated, returning = generation_in_force + 1, 0, returning + allocated
    updated = replace(
        product,
        stock_available=available,
        stock_allocated=allocated,
        stock_returning=returning,
        allocation_generation=generation_in_force,
        stock_reserved=product.stock_reserved + quantity,
        version=product.version + 1,
        units_reserved_total=product.units_reserved_total + quantity,
    )
    reservation = Reservation(order_id, product.id, quantity, "reserved")
    return AllocatedReservation(updated, reservation, from_free, overdrawn, revoked)


def take_back(product: Product, generation: int, units: int) -> Product:
    """Checkout gave back ``units`` of ``generation`` it will never reserve (StockAllocationReturned)."""
    if generation == product.allocation_generation:  # checkout never returns the generation in force; defensive
        return replace(product, stock_allocated=product.stock_allocated - min(product.stock_allocated, units))
    return replace(product, stock_returning=product.stock_returning - min(product.stock_returning, units))


def top_up(product: Product, target: int) -> tuple[Product, int]:
    """Allocate more units to checkout once its allocation is down to half of ``target`` (0: allocations off):
    up to ``target``, from the free stock of an active product. The units granted (0: none); they stay on sale,
    so the product's version does not change."""
    if target <= 0 or product.status != "active" or product.stock_allocated * 2 > target or product.stock_free <= 0:
        return product, 0
    granted = min(product.stock_free, target - product.stock_allocated)
    return replace(product, stock_allocated=product.stock_allocated + granted), granted


def restocked(product: Product, target: int) -> tuple[Product, int | None]:
    """After the merchant set the stock or the status: when the stock is now below what is allocated, the
    allocation is taken back (a new generation; checkout drops it when it hears, and gives back what it had left);
    then ``top_up``. The units granted, or None when nothing about the allocation changed."""
    revoke = product.stock_allocated > product.stock_available
    if revoke:
        product = replace(
            product,
            stock_allocated=0,
            stock_returning=product.stock_returning + product.stock_allocated,
            allocation_generation=product.allocation_generation + 1,
        )
    product, granted = top_up(product, target)
    return product, granted if granted or revoke else None


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
