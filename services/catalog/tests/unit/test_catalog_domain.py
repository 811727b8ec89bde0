"""Stock rules: never negative, reserved once, released once."""

from __future__ import annotations

import uuid

import pytest
from catalog import domain
from catalog.domain import Product, Reservation


def a_product(stock: int = 5, status: str = "active", currency: str = "EUR") -> Product:
    return Product(
        id=uuid.uuid4(),
        merchant_id=uuid.uuid4(),
        title="Mug",
        description="",
        image_url=None,
        price_minor=1200,
        currency=currency,
        stock_available=stock,
        stock_reserved=0,
        stock_sold=0,
        status=status,  # type: ignore[arg-type]
        version=1,
    )


def test_reserving_moves_units_from_available_to_reserved() -> None:
    product, reservation = domain.reserve(a_product(stock=5), uuid.uuid4(), 2, "EUR")
    assert (product.stock_available, product.stock_reserved) == (3, 2)
    assert reservation.status == "reserved"
    assert product.version == 2


def test_reserving_the_last_units_is_allowed_but_one_more_is_refused() -> None:
    product, _ = domain.reserve(a_product(stock=2), uuid.uuid4(), 2, "EUR")
    assert product.stock_available == 0
    with pytest.raises(domain.ReservationRefused, match="only 0 left"):
        domain.reserve(product, uuid.uuid4(), 1, "EUR")


@pytest.mark.parametrize(
    ("product", "quantity", "currency", "reason"),
    [
        (None, 1, "EUR", "unknown product"),
        (a_product(status="delisted"), 1, "EUR", "no longer on sale"),
        (a_product(currency="EUR"), 1, "USD", "does not match"),
        (a_product(stock=1), 2, "EUR", "only 1 left"),
        (a_product(), 0, "EUR", "at least 1"),
    ],
)
def test_reservation_is_refused_with_a_reason(
    product: Product | None, quantity: int, currency: str, reason: str
) -> None:
    with pytest.raises(domain.ReservationRefused, match=reason):
        domain.reserve(product, uuid.uuid4(), quantity, currency)


def test_paying_turns_reserved_units_into_sold_ones() -> None:
    product, reservation = domain.reserve(a_product(stock=5), uuid.uuid4(), 2, "EUR")
    product, reservation = domain.commit(product, reservation)
    assert (product.stock_available, product.stock_reserved, product.stock_sold) == (3, 0, 2)
    assert reservation.status == "committed"


def test_released_stock_goes_back_on_sale_only_once() -> None:
    product, reservation = domain.reserve(a_product(stock=5), uuid.uuid4(), 2, "EUR")
    product, reservation, moved = domain.release(product, reservation, "payment failed")
    assert moved and product.stock_available == 5 and product.stock_reserved == 0
    again, _, moved_again = domain.release(product, reservation, "payment failed")
    assert not moved_again and again == product


def test_a_paid_reservation_cannot_be_released_but_can_be_restocked_once() -> None:
    product, reservation = domain.reserve(a_product(stock=5), uuid.uuid4(), 2, "EUR")
    product, reservation = domain.commit(product, reservation)
    _, _, moved = domain.release(product, reservation, "late cancel")
    assert not moved
    product, reservation, moved = domain.restock(product, reservation, "returned")
    assert moved and (product.stock_available, product.stock_sold) == (5, 0)
    _, _, moved_again = domain.restock(product, reservation, "returned")
    assert not moved_again


def test_a_rejected_reservation_never_moves_stock() -> None:
    product = a_product(stock=1)
    rejected = Reservation(uuid.uuid4(), product.id, 1, "rejected", "sold out")
    assert domain.release(product, rejected, "x")[2] is False
    assert domain.commit(product, rejected) == (product, rejected)


def test_units_ever_reserved_only_go_up_and_every_product_event_carries_them() -> None:
    """Checkout tells a reservation its copy already shows from one it has not heard of by this count (contract
    1.3.0): a reservation adds to it; a sale, a release or a refusal leaves it."""
    from catalog.service import product_event

    product, first = domain.reserve(a_product(stock=5), uuid.uuid4(), 2, "EUR")
    product, second = domain.reserve(product, uuid.uuid4(), 1, "EUR")
    assert product.units_reserved_total == 3
    product, _ = domain.commit(product, first)
    product, _, moved = domain.release(product, second, "payment failed")
    assert moved and product.units_reserved_total == 3 and product.stock_available == 3
    with pytest.raises(domain.ReservationRefused):
        domain.reserve(product, uuid.uuid4(), 9, "EUR")
    event = product_event(product, "corr")
    assert event.units_reserved_total == 3 and event.version == product.version
