"""The reconciliation checker catches what it is there to catch (rows and messages made up, no infrastructure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tweetshop_contracts import topics
from tweetshop_devstack import reconciliation
from tweetshop_devstack.reconciliation import Report, TopicEvent

PRODUCT = uuid.uuid4()
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def an_order(status: str, intent: str | None = None, quantity: int = 1) -> dict[str, Any]:
    return {"status": status, "product_id": PRODUCT, "quantity": quantity, "payment_intent_id": intent}


def order_event(order_id: str, event_type: str, event_id: str | None = None) -> TopicEvent:
    return TopicEvent(topics.CHECKOUT_ORDERS, event_id or str(uuid.uuid4()), event_type, order_id)


def checked(check: Any, *args: Any) -> list[str]:
    report = Report()
    check(report, *args)
    return report.violations


# --- orders ------------------------------------------------------------------------------------------------------


def test_an_order_with_one_placed_and_one_terminal_event_is_fine_even_if_a_message_came_twice() -> None:
    paid_event = order_event("o1", "OrderPaid")
    events = [order_event("o1", "OrderPlaced"), paid_event, paid_event]  # redelivered by the outbox
    assert checked(reconciliation._check_orders, {"o1": an_order("paid")}, {"o1"}, events) == []


def test_an_order_still_open_is_reported() -> None:
    violations = checked(
        reconciliation._check_orders, {"o1": an_order("requires_action")}, {"o1"}, [order_event("o1", "OrderPlaced")]
    )
    assert violations == ["order o1 never ended: still requires_action"]


def test_an_order_that_ended_twice_is_reported() -> None:
    events = [order_event("o1", "OrderPlaced"), order_event("o1", "OrderPaid"), order_event("o1", "OrderCancelled")]
    violations = checked(reconciliation._check_orders, {"o1": an_order("paid")}, {"o1"}, events)
    assert len(violations) == 1 and "terminal events are" in violations[0]


def test_a_status_without_its_event_is_reported() -> None:
    events = [order_event("o1", "OrderPlaced")]
    violations = checked(reconciliation._check_orders, {"o1": an_order("failed")}, {"o1"}, events)
    assert violations == ["order o1 is failed but its terminal events are none"]


def test_an_accepted_order_checkout_does_not_know_is_reported() -> None:
    violations = checked(reconciliation._check_orders, {}, {"o9"}, [])
    assert violations == ["order o9 was accepted (202/200) but checkout has no such order"]


# --- money -------------------------------------------------------------------------------------------------------


def test_one_succeeded_intent_per_paid_order_and_none_for_the_others_is_fine() -> None:
    orders = {"o1": an_order("paid", "pi_1"), "o2": an_order("failed", "pi_2"), "o3": an_order("cancelled")}
    intents = {
        "o1": [{"id": "pi_1", "status": "succeeded"}],
        "o2": [{"id": "pi_2", "status": "requires_payment_method"}],
    }
    assert checked(reconciliation._check_payments, orders, intents) == []


def test_a_second_charge_for_a_paid_order_is_reported() -> None:
    intents = {"o1": [{"id": "pi_1", "status": "succeeded"}, {"id": "pi_2", "status": "succeeded"}]}
    violations = checked(reconciliation._check_payments, {"o1": an_order("paid", "pi_1")}, intents)
    assert "order o1 has 2 PaymentIntents (one per order at most)" in violations
    assert "paid order o1 has 2 succeeded PaymentIntents (expected 1)" in violations


def test_a_charge_for_a_cancelled_order_is_reported() -> None:
    intents = {"o1": [{"id": "pi_1", "status": "succeeded"}]}
    violations = checked(reconciliation._check_payments, {"o1": an_order("cancelled")}, intents)
    assert violations == ["order o1 is cancelled but was charged: ['pi_1']"]


def test_a_paid_order_recording_another_intent_than_the_one_charged_is_reported() -> None:
    intents = {"o1": [{"id": "pi_2", "status": "succeeded"}]}
    violations = checked(reconciliation._check_payments, {"o1": an_order("paid", "pi_1")}, intents)
    assert violations == ["paid order o1 records pi_1 but pi_2 was charged"]


# --- stock -------------------------------------------------------------------------------------------------------


def stock(available: int, reserved: int, sold: int) -> dict[uuid.UUID, dict[str, int]]:
    return {PRODUCT: {"stock_available": available, "stock_reserved": reserved, "stock_sold": sold}}


def test_conserved_stock_that_matches_the_paid_orders_is_fine() -> None:
    orders = {"o1": an_order("paid", quantity=2), "o2": an_order("cancelled")}
    reservations = [{"order_id": "o1", "status": "committed"}, {"order_id": "o2", "status": "released"}]
    assert checked(reconciliation._check_stock, {PRODUCT: 10}, stock(8, 0, 2), orders, reservations) == []


def test_stock_that_appeared_or_vanished_is_reported() -> None:
    violations = checked(reconciliation._check_stock, {PRODUCT: 10}, stock(9, 0, 0), {}, [])
    assert violations == [f"product {PRODUCT}: stock not conserved: 10 ≠ 9 available + 0 reserved + 0 sold"]


def test_stock_left_reserved_and_a_sale_without_a_paid_order_are_reported() -> None:
    orders = {"o1": an_order("failed")}
    reservations = [{"order_id": "o1", "status": "committed"}]
    violations = checked(reconciliation._check_stock, {PRODUCT: 10}, stock(8, 1, 1), orders, reservations)
    assert f"product {PRODUCT}: 1 unit(s) still reserved at rest" in violations
    assert f"product {PRODUCT}: 1 sold in catalog, paid orders hold 0" in violations
    assert "order o1: paid in checkout = False, sold in catalog = True" in violations


# --- delivery ----------------------------------------------------------------------------------------------------


def outbox_row(event_id: str, topic: str = topics.CHECKOUT_ORDERS, published: bool = True) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "topic": topic,
        "event_type": "OrderPlaced",
        "published_at": NOW if published else None,
    }


def test_every_outbox_row_on_its_topic_and_applied_once_by_each_consumer_is_fine() -> None:
    events = {topics.CHECKOUT_ORDERS: [order_event("o1", "OrderPlaced", "e1"), order_event("o1", "OrderPlaced", "e1")]}
    inbox = [
        {"consumer": "catalog.orders", "event_id": "e1", "topic": topics.CHECKOUT_ORDERS},
        {"consumer": "tracking.orders", "event_id": "e1", "topic": topics.CHECKOUT_ORDERS},
    ]
    report = Report()
    reconciliation._check_delivery(report, {"checkout": [outbox_row("e1")]}, inbox, events, {})
    assert report.violations == []
    assert report.facts["duplicate_messages_on_topics"] == {topics.CHECKOUT_ORDERS: 1}


def test_an_outbox_row_that_never_reached_its_topic_is_reported() -> None:
    violations = checked(reconciliation._check_delivery, {"checkout": [outbox_row("e1")]}, [], {}, {})
    assert violations == [f"checkout outbox event e1 (OrderPlaced) is not on {topics.CHECKOUT_ORDERS}"]


def test_an_event_a_consumer_never_applied_and_a_parked_message_are_reported() -> None:
    events = {topics.CHECKOUT_ORDERS: [order_event("o1", "OrderPlaced", "e1"), order_event("o2", "OrderPlaced", "e2")]}
    inbox = [{"consumer": "catalog.orders", "event_id": "e1", "topic": topics.CHECKOUT_ORDERS}]
    parked = {topics.CHECKOUT_ORDERS: [order_event("o2", "OrderPlaced", "e2")]}
    violations = checked(reconciliation._check_delivery, {}, inbox, events, parked)
    assert f"catalog.orders never applied 1 event(s) of {topics.CHECKOUT_ORDERS}, e.g. e2" in violations
    assert f"1 message(s) parked on {topics.CHECKOUT_ORDERS}.dlq" in violations


# --- effects once ------------------------------------------------------------------------------------------------


def reservation_event(order_id: str, event_type: str) -> TopicEvent:
    return TopicEvent(topics.CATALOG_RESERVATIONS, str(uuid.uuid4()), event_type, order_id)


def test_a_second_shipment_a_second_answer_and_a_second_release_are_reported() -> None:
    events = {
        topics.CHECKOUT_ORDERS: [order_event("o1", "OrderPlaced")],
        topics.CATALOG_RESERVATIONS: [
            reservation_event("o1", "StockReserved"),
            reservation_event("o1", "StockRejected"),
            reservation_event("o1", "StockReleased"),
            reservation_event("o1", "StockReleased"),
        ],
    }
    shipments = [{"order_id": "o1"}, {"order_id": "o1"}]
    reservations = [{"order_id": "o1"}]
    violations = checked(reconciliation._check_effects_once, {"o1": an_order("paid")}, reservations, shipments, events)
    assert violations == [
        "order o1 is paid and has 2 shipment(s)",
        "catalog answered order o1 2 times (expected once)",
        "catalog released the stock of order o1 2 times (at most once)",
    ]


def test_a_reservation_for_an_order_never_placed_is_reported() -> None:
    events = {
        topics.CHECKOUT_ORDERS: [order_event("o1", "OrderPlaced")],
        topics.CATALOG_RESERVATIONS: [reservation_event("o1", "StockReserved")],
    }
    reservations = [{"order_id": "o1"}, {"order_id": "o2"}]
    violations = checked(
        reconciliation._check_effects_once, {"o1": an_order("paid")}, reservations, [{"order_id": "o1"}], events
    )
    assert violations == ["catalog holds 2 reservations for 1 orders placed (unknown: ['o2'], missing: [])"]
