"""The payment worker: charges orders whose stock is reserved, and checks undecided payments with Stripe.

It wakes when an order becomes due in this process (a POST reserved it from the
allocation, or a StockReserved applied here made it due) and polls as well, so
an order is never stranded by a crash or by a reservation handled by another
replica. Orders are leased with ``FOR UPDATE SKIP LOCKED``, so replicas share the work.

It keeps up to ``payment_max_in_flight`` orders with Stripe at once and claims more
as soon as there is room (in claims of at most ``payment_batch_size``): a slow
Stripe answer holds up only its own order, never a batch.

A POST that places an order from the allocation takes room first (``promise``): the order is then inserted
already leased to this process, as a claim would leave it, and handed over (``start``) without a claim. If the
process dies between the two, the lease runs out and the order is claimed like any other.
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
from .repository import ClaimedOrder
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
        self._in_flight: set[asyncio.Task[None]] = set()
        self._promised = 0  # room taken by POSTs placing an order, not yet handed over or given back
        self._running = False

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def promise(self) -> bool:
        """Take room for one payment, for an order about to be placed leased to this process; False when the
        worker is not running or full (the order is then placed due, for a claim). Each True is followed by one
        ``start`` or one ``release``."""
        if not self._running or len(self._in_flight) + self._promised >= self._settings.payment_max_in_flight:
            return False
        self._promised += 1
        return True

    def release(self) -> None:
        """Give back a promise the placed order did not use (a replay, an order beyond the allocation)."""
        self._promised -= 1
        self._room_back()

    def start(self, claimed: ClaimedOrder) -> None:
        """Pay an order placed leased to this process, in the room its promise took."""
        self._promised -= 1
        if not self._running:
            # Stopping: the order keeps its lease, which runs out, and it is claimed then.
            return
        self._spawn(payments.PaymentStep(claimed.order, claimed.overdue, claimed.version, claimed.access_hash))
        metrics.PAYMENTS_HANDED_OVER.inc()

    def _spawn(self, step: payments.PaymentStep) -> None:
        task = asyncio.create_task(self._settle(step), name=f"payment-{step.order.id}")
        self._in_flight.add(task)
        task.add_done_callback(self._done)
        metrics.PAYMENTS_IN_FLIGHT.set(len(self._in_flight))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        metrics.PAYMENTS_IN_FLIGHT.set(len(self._in_flight))
        self._room_back()

    def _room_back(self) -> None:
        if len(self._in_flight) + self._promised == self._settings.payment_max_in_flight - 1:
            self._wake.set()  # the window was full and there is room again

    async def after_reservation(self, event: Envelope) -> None:
        """after_commit hook of the reservations subscriber: wakes the worker when the event made its order due
        (not for an order reserved from the allocation, due since its POST, which woke the worker then)."""
        if isinstance(event, StockReserved) and reservations.made_due(event.order_id):
            self.wake()

    async def run(self) -> None:
        """Work until cancelled; payments in flight then are cancelled too (their leases expire, and they are
        taken up again: an attempt is committed before Stripe is called)."""
        refunds_checked = 0.0
        in_flight = self._in_flight
        window = self._settings.payment_max_in_flight
        self._running = True
        try:
            while True:
                self._wake.clear()
                room = window - len(in_flight) - self._promised
                wanted = min(room, self._settings.payment_batch_size)
                claimed: list[payments.PaymentStep] = []
                if wanted > 0:
                    claimed = await payments.claim_due_payments(self._pool(), self._settings, limit=wanted)
                    for step in claimed:
                        self._spawn(step)
                if time.monotonic() - refunds_checked > self._settings.refund_recheck_after_s / 2:
                    refunds_checked = time.monotonic()
                    await self._resume_refunds()
                if wanted == 0 or len(claimed) < wanted:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._settings.payment_poll_interval_s)
        finally:
            self._running = False
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
