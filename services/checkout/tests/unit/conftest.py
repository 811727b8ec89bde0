"""Small fakes that satisfy checkout's real interfaces, handed to tests as fixtures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from checkout.domain import Order
from checkout.gateway import Intent, PaymentDeclined, PaymentProviderUnavailable, RefundResult


@dataclass
class FakeGateway:
    """A payment provider that answers from a script and remembers what it was asked."""

    create_status: str = "succeeded"
    decline_with: str | None = None
    existing: dict[uuid.UUID, Intent] = field(default_factory=dict)
    intents: dict[str, Intent] = field(default_factory=dict)
    created: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Every call raises PaymentProviderUnavailable (Stripe down, 5xx or 429) while this is set.
    unavailable: str | None = None
    # The intent succeeds just before Stripe would cancel it (the buyer finished 3-D Secure meanwhile).
    pays_before_cancel: bool = False

    def _maybe_down(self) -> None:
        if self.unavailable:
            raise PaymentProviderUnavailable(self.unavailable)

    async def create_intent(self, order: Order, attempt: int) -> Intent:
        self._maybe_down()
        self.created.append((order.id, attempt))
        if self.decline_with:
            raise PaymentDeclined(self.decline_with, f"pi_declined_{attempt}")
        intent = Intent(f"pi_{len(self.created)}", self.create_status, "secret", None, str(order.id))
        self.intents[intent.id] = intent
        return intent

    async def find_intent_for_order(self, order: Order) -> Intent | None:
        self._maybe_down()
        return self.existing.get(order.id)

    async def retrieve_intent(self, payment_intent_id: str) -> Intent:
        self._maybe_down()
        return self.intents[payment_intent_id]

    async def cancel_intent(self, payment_intent_id: str) -> Intent:
        self._maybe_down()
        intent = self.intents[payment_intent_id]
        if self.pays_before_cancel:
            intent = self.intents[payment_intent_id] = Intent(intent.id, "succeeded", None, None, intent.order_id)
        if intent.status in ("succeeded", "canceled", "processing"):
            # What Stripe answers: a succeeded or cancelled intent cannot be cancelled (400).
            raise PaymentDeclined(f"You cannot cancel this PaymentIntent because it has a status of {intent.status}.")
        self.cancelled.append(payment_intent_id)
        cancelled = self.intents[payment_intent_id] = Intent(intent.id, "canceled", None, None, intent.order_id)
        return cancelled

    async def create_refund(
        self, payment_intent_id: str, amount_minor: int, refund_id: uuid.UUID, order_id: uuid.UUID
    ) -> RefundResult:
        return RefundResult(f"re_{refund_id.hex[:8]}", "succeeded", amount_minor)

    async def find_refund(self, payment_intent_id: str, refund_id: uuid.UUID) -> RefundResult | None:
        return None


@pytest.fixture
def fake_gateway_class() -> type[FakeGateway]:
    """The fake payment provider, to build with the answers a test needs."""
    return FakeGateway
