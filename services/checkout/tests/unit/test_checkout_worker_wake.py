"""The payment worker is woken by a StockReserved only when that event made its order due for payment: an order
reserved from checkout's allocation was due since its POST (which woke the worker), and its StockReserved, heard
later, would only make the worker claim nothing."""

from __future__ import annotations

import uuid
from typing import Any

from checkout.config import CheckoutSettings
from checkout.usecases import reservations
from checkout.worker import PaymentWorker
from tweetshop_contracts import StockRejected, StockReserved


def reserved(order_id: uuid.UUID) -> StockReserved:
    return StockReserved(producer="catalog", correlation_id="c", order_id=order_id, product_id=uuid.uuid4(), quantity=1)


def a_worker(fake_gateway_class: type[Any]) -> PaymentWorker:
    settings = CheckoutSettings(log_format="console", database_url="postgresql://nobody@127.0.0.1:1/none")
    return PaymentWorker(lambda: None, fake_gateway_class(), settings)  # type: ignore[arg-type,return-value]


async def test_a_reservation_that_made_its_order_due_wakes_the_worker_once(fake_gateway_class: type[Any]) -> None:
    worker, order_id = a_worker(fake_gateway_class), uuid.uuid4()
    reservations.remember_made_due(order_id)
    await worker.after_reservation(reserved(order_id))
    assert worker._wake.is_set()
    worker._wake.clear()
    await worker.after_reservation(reserved(order_id))  # the same event again (redelivered): asked once
    assert not worker._wake.is_set()


async def test_a_reservation_of_an_order_already_due_does_not(fake_gateway_class: type[Any]) -> None:
    worker = a_worker(fake_gateway_class)
    await worker.after_reservation(reserved(uuid.uuid4()))  # reserved from the allocation: due since its POST
    rejected = StockRejected(
        producer="catalog", correlation_id="c", order_id=uuid.uuid4(), product_id=uuid.uuid4(), quantity=1, reason="x"
    )
    await worker.after_reservation(rejected)
    assert not worker._wake.is_set()


def test_the_memory_is_bounded() -> None:
    first = uuid.uuid4()
    reservations.remember_made_due(first)
    for _ in range(reservations._MADE_DUE_MAX):
        reservations.remember_made_due(uuid.uuid4())
    assert not reservations.made_due(first)
    assert len(reservations._MADE_DUE) <= reservations._MADE_DUE_MAX
