"""Allocations: units of stock catalog sets aside for checkout, which reserves from them itself. No unit is ever
both allocated and reservable by catalog, an allocated order that the allocation holds is recorded and never
refused, and a stock or status change takes the allocation back."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace

import pytest
from catalog import domain
from catalog.domain import Product
from hypothesis import example, given, settings
from hypothesis import strategies as st


def a_product(stock: int = 10, allocated: int = 0, generation: int = 0, status: str = "active") -> Product:
    return Product(
        id=uuid.uuid4(),
        merchant_id=uuid.uuid4(),
        title="Mug",
        description="",
        image_url=None,
        price_minor=1200,
        currency="EUR",
        stock_available=stock,
        stock_reserved=0,
        stock_sold=0,
        status=status,  # type: ignore[arg-type]
        version=1,
        stock_allocated=allocated,
        allocation_generation=generation,
    )


def test_a_top_up_allocates_up_to_the_target_and_keeps_the_units_on_sale() -> None:
    product, granted = domain.top_up(a_product(stock=80), 50)
    assert granted == 50
    assert (product.stock_available, product.stock_allocated, product.stock_free) == (80, 50, 30)
    assert product.version == 1  # nothing a reader sees changed


@pytest.mark.parametrize(
    ("stock", "allocated", "status", "target", "granted"),
    [
        (80, 25, "active", 50, 25),  # down to half: topped up to the target
        (80, 26, "active", 50, 0),  # more than half left: not yet
        (30, 0, "active", 50, 30),  # no more than the free stock
        (30, 30, "active", 50, 0),  # nothing free
        (80, 0, "delisted", 50, 0),  # not on sale
        (80, 0, "active", 0, 0),  # allocations off
    ],
)
def test_when_a_top_up_grants_and_how_much(stock: int, allocated: int, status: str, target: int, granted: int) -> None:
    assert domain.top_up(a_product(stock, allocated, status=status), target)[1] == granted


def test_catalog_reserves_only_from_the_units_it_did_not_allocate() -> None:
    product = a_product(stock=3, allocated=2)
    reserved, _ = domain.reserve(product, uuid.uuid4(), 1, "EUR")
    assert (reserved.stock_available, reserved.stock_allocated, reserved.stock_reserved) == (2, 2, 1)
    with pytest.raises(domain.ReservationRefused, match="only 0 left"):
        domain.reserve(reserved, uuid.uuid4(), 1, "EUR")


def test_an_order_from_the_allocation_in_force_is_taken_from_it() -> None:
    done = domain.reserve_allocated(a_product(stock=10, allocated=4, generation=2), uuid.uuid4(), 3, generation=2)
    p = done.product
    assert (p.stock_available, p.stock_allocated, p.stock_reserved, p.units_reserved_total) == (7, 1, 3, 3)
    assert (done.from_free, done.overdrawn) == (0, 0)
    assert done.reservation.status == "reserved"


def test_an_order_from_a_taken_back_allocation_counts_against_the_free_stock() -> None:
    # The merchant changed the stock (generation 3) before checkout heard; its order of generation 2 is counted
    # like an order placed before the change, as one that catalog answers after a change is.
    done = domain.reserve_allocated(a_product(stock=5, allocated=2, generation=3), uuid.uuid4(), 2, generation=2)
    assert (done.product.stock_available, done.product.stock_allocated) == (3, 2)
    assert (done.from_free, done.overdrawn) == (2, 0)


def test_an_order_beyond_every_unit_is_overdrawn_and_stock_never_goes_negative() -> None:
    done = domain.reserve_allocated(a_product(stock=1, allocated=0, generation=1), uuid.uuid4(), 3, generation=0)
    assert (done.product.stock_available, done.product.stock_reserved) == (0, 3)
    assert (done.from_free, done.overdrawn) == (1, 2)


@pytest.mark.parametrize(
    ("allocated", "returning", "in_force", "generation", "quantity", "holds"),
    [
        (2, 0, 3, 3, 2, True),  # the allocation in force holds it
        (2, 0, 3, 3, 3, False),  # more units than are out
        (2, 0, 3, 4, 1, False),  # a generation never issued
        (2, 0, 3, -1, 1, False),
        (2, 3, 3, 1, 3, True),  # a taken-back generation whose units are still out
        (2, 3, 3, 1, 4, False),  # more than are still out
        (2, 0, 3, 1, 1, False),  # taken back, and nothing of it is out any more
        (0, 0, 0, 0, 1, False),  # generation 0 of a product never allocated (allocations off)
    ],
)
def test_an_order_is_recorded_from_an_allocation_only_when_what_catalog_counts_out_holds_it(
    allocated: int, returning: int, in_force: int, generation: int, quantity: int, holds: bool
) -> None:
    product = replace(a_product(stock=10, allocated=allocated, generation=in_force), stock_returning=returning)
    assert domain.allocation_holds(product, generation, quantity) is holds


def test_stock_set_below_the_allocation_takes_it_back_and_the_rest_waits_for_checkout() -> None:
    product, granted = domain.restocked(a_product(stock=3, allocated=8, generation=4), 50)
    assert (product.allocation_generation, product.stock_allocated, product.stock_returning, granted) == (5, 0, 8, 0)
    assert product.stock_free == 0  # the 8 may have been sold by checkout already: nothing is reservable yet
    # checkout sold 2 of them before it heard, and gives the 6 it had left back
    product = domain.reserve_allocated(product, uuid.uuid4(), 2, generation=4).product
    product = domain.take_back(product, 4, 6)
    assert (product.stock_available, product.stock_returning, product.stock_free) == (1, 0, 1)


def test_an_overdrawing_order_takes_back_the_allocation_in_force_that_the_stock_no_longer_holds() -> None:
    # Generation 0's 3 units were taken back (the merchant set 0) while checkout had sold one untold; then stock 4
    # granted generation 1 its one free unit, and stock 1 kept it. The old order now takes the last unit of stock:
    # generation 1's unit is beyond the stock, and checkout may still sell it. It is taken back (generation 2), not
    # cut to zero, so catalog still counts it and recognises its order if checkout sold it before it heard.
    product = replace(a_product(stock=1, allocated=1, generation=1), stock_returning=3)
    done = domain.reserve_allocated(product, uuid.uuid4(), 1, generation=0)
    p = done.product
    assert done.revoked and done.overdrawn == 0
    assert (p.stock_available, p.allocation_generation, p.stock_allocated, p.stock_returning) == (0, 2, 0, 3)
    assert domain.allocation_holds(p, 1, 1)  # generation 1's unit, sold by checkout before it heard
    assert not domain.reserve_allocated(a_product(stock=5, allocated=2, generation=1), uuid.uuid4(), 1, 1).revoked


def test_stock_set_at_or_above_the_allocation_keeps_it() -> None:
    product, granted = domain.restocked(a_product(stock=30, allocated=30, generation=4), 50)
    assert (product.allocation_generation, product.stock_allocated, granted) == (4, 30, None)
    product, granted = domain.restocked(a_product(stock=80, allocated=20, generation=4), 50)
    assert (product.allocation_generation, product.stock_allocated, granted) == (4, 50, 30)


Step = tuple[str, int]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["top_up", "to_checkout", "buy", "to_catalog", "return", "catalog", "set_stock"]),
            st.integers(0, 6),
        ),
        max_size=80,
    ),
)
@example(  # a grant, the stock set below what checkout sold untold, then an order of the old generation overdraws
    [("set_stock", 3), ("to_checkout", 0), ("buy", 1), ("set_stock", 0), ("set_stock", 4), ("set_stock", 1)]
)
@settings(max_examples=500)
def test_no_delivery_order_sells_more_than_the_merchant_put_on_sale(steps: list[Step]) -> None:
    """Catalog and a model of checkout, with every event in transit delivered in any order: units sold after the
    merchant last set the stock never exceed that count plus what checkout could still sell untold at that moment;
    nothing is overdrawn unless the merchant set the stock below that; and once everything is delivered, every
    allocated unit is accounted for (reserved, or back with catalog)."""
    product = a_product(stock=20)
    checkout = {"generation": -1, "left": 0}
    allocations: list[tuple[int, int]] = []  # StockAllocated in transit to checkout
    untold: list[tuple[int, int]] = []  # orders checkout reserved from its allocation, in transit to catalog
    returns: list[tuple[int, int]] = []  # StockAllocationReturned in transit to catalog
    budget, sold = 20, 0
    overdrawn, may_overdraw = 0, False

    def deliver_allocation(i: int) -> None:
        generation, units = allocations.pop(i % len(allocations))
        if generation > checkout["generation"]:
            if checkout["left"]:
                returns.append((checkout["generation"], checkout["left"]))
            checkout.update(generation=generation, left=units)
        elif generation == checkout["generation"]:
            checkout["left"] += units
        elif units:
            returns.append((generation, units))

    def deliver_order(i: int) -> None:
        nonlocal product, overdrawn
        generation, units = untold.pop(i % len(untold))
        # What checkout really reserved always fits what catalog counts out (the service's fence against forgery
        # relies on it: an order that does not fit is decided as any other).
        assert domain.allocation_holds(product, generation, units)
        done = domain.reserve_allocated(product, uuid.uuid4(), units, generation)
        product, overdrawn = done.product, overdrawn + done.overdrawn
        if done.revoked:  # announced as a restock's is
            allocations.append((product.allocation_generation, 0))

    def deliver_return(i: int) -> None:
        nonlocal product
        product = domain.take_back(product, *returns.pop(i % len(returns)))

    for action, n in steps:
        if action == "top_up":
            product, granted = domain.top_up(product, 8)
            if granted:
                allocations.append((product.allocation_generation, granted))
        elif action == "to_checkout" and allocations:
            deliver_allocation(n)
        elif action == "buy" and 0 < n <= checkout["left"]:
            checkout["left"] -= n
            untold.append((checkout["generation"], n))
            sold += n
        elif action == "to_catalog" and untold:
            deliver_order(n)
        elif action == "return" and returns:
            deliver_return(n)
        elif action == "catalog" and n:
            with contextlib.suppress(domain.ReservationRefused):
                product, _ = domain.reserve(product, uuid.uuid4(), n, "EUR")
                sold += n
        elif action == "set_stock":
            # What checkout may still sell that catalog has not recorded: untold orders, what it has left, and
            # grants on their way to it that it will still take (not stale by the time they arrive).
            out = (
                sum(units for _, units in untold)
                + checkout["left"]
                + sum(units for generation, units in allocations if generation >= checkout["generation"])
            )
            product, granted = domain.restocked(replace(product, stock_available=n), 8)
            if granted is not None:
                allocations.append((product.allocation_generation, granted))
            budget, sold, may_overdraw = n + out, 0, may_overdraw or n < out
        assert 0 <= product.stock_allocated <= product.stock_available
        assert sold <= budget
    while allocations or untold or returns:
        for deliver, queue in ((deliver_allocation, allocations), (deliver_order, untold), (deliver_return, returns)):
            if queue:
                deliver(0)  # type: ignore[operator]
    assert product.stock_returning == 0
    if checkout["generation"] == product.allocation_generation:
        assert checkout["left"] == product.stock_allocated
    else:  # checkout never heard of any allocation
        assert product.stock_allocated == 0
    assert overdrawn == 0 or may_overdraw
