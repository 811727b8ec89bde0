"""The payment worker: charges orders whose stock is reserved, and checks undecided payments with Stripe.

It wakes when an order becomes due in this process (a POST reserved it from the
allocation, or a StockReserved applied here made it due) and polls as well, so
an order is never stranded by a crash or by a reservation handled by another
replica. Orders are leased with ``FOR UPDATE SKIP LOCKED``, so replicas share the work.

It keeps up to ``payment_max_in_flight`` orders with Stripe at once and claims more
as soon as there is room (in claims of at most ``payment_batch_size``): a slow
Stripe answer holds up only its own order, never a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import structlog
from tweetshop_contracts import Envelope, StockReserved, topics
from tweetshop_platform import telemetry

from . import metrics
from .config import CheckoutSettings
from .gateway import PaymentGateway
from .usecases import payments, refunds, reservations

log = structlog.get_logger(__name__)


class PaymentWorker:
    def __init__(self, pool: Callable[[], asyncpg.Pool], gateway: PaymentGateway, settings: CheckoutSettings) -> None:
        # The pool exists only once the runtime has started: ask for it when working.
        self._pool = pool
        self._gateway = gateway
        self._settings = settings
        self._wake = asyncio.Event()
        self._tracer = telemetry.tracer(settings.service_name, settings.tracing)  # None: tracing off

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    async def after_reservation(self, event: Envelope) -> None:
        """after_commit hook of the reservations subscriber: wakes the worker when the event made its order due
        (not for an order reserved from the allocation, due since its POST, which woke the worker then)."""
        if isinstance(event, StockReserved) and reservations.made_due(event.order_id):
            self.wake()

    async def run(self) -> None:
        """Work until cancelled; payments in flight then are cancelled too (their leases expire, and they are
        taken up again: an attempt is committed before Stripe is called)."""
        refunds_checked = 0.0
        in_flight: set[asyncio.Task[None]] = set()
        window = self._settings.payment_max_in_flight

        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            metrics.PAYMENTS_IN_FLIGHT.set(len(in_flight))
            if len(in_flight) == window - 1:
                self._wake.set()  # the window was full and there is room again

        try:
            while True:
                self._wake.clear()
                room = window - len(in_flight)
                wanted = min(room, self._settings.payment_batch_size)
                claimed: list[payments.PaymentStep] = []
                if wanted > 0:
                    claimed = await payments.claim_due_payments(self._pool(), self._settings, limit=wanted)
                    for step in claimed:
                        task = asyncio.create_task(self._settle(step), name=f"payment-{step.order.id}")
                        in_flight.add(task)
                        task.add_done_callback(done)
                    metrics.PAYMENTS_IN_FLIGHT.set(len(in_flight))
                if time.monotonic() - refunds_checked > self._settings.refund_recheck_after_s / 2:
                    refunds_checked = time.monotonic()
                    await self._resume_refunds()
                if wanted == 0 or len(claimed) < wanted:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._settings.payment_poll_interval_s)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            metrics.PAYMENTS_IN_FLIGHT.set(0)

    async def _settle(self, step: payments.PaymentStep) -> None:
        # With tracing on, the step continues the trace of the StockReserved that woke it (when consumed here), or
        # of the POST that reserved the order from checkout's allocation.
        order_id = str(step.order.id)
        woken_by = topics.CATALOG_RESERVATIONS
        if self._tracer is not None and telemetry.recall(woken_by, order_id) is None:
            woken_by = topics.CHECKOUT_ORDERS
        try:
            with telemetry.resumed(self._tracer, "settle payment", woken_by, order_id):
                await payments.settle_payment(self._pool(), self._gateway, self._settings, step)
        except Exception as exc:  # one bad order must not stop the batch; its lease expires and it is retried
            log.exception("payment step failed", order_id=str(step.order.id), error=repr(exc))

    async def _resume_refunds(self) -> None:
        try:
            await refunds.resume_stale_refunds(self._pool(), self._gateway, self._settings)
        except Exception as exc:
            log.exception("resuming refunds failed", error=repr(exc))
