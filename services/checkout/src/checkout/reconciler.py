"""The reconciler: on a timer, ends orders still waiting for their payment past the deadline, from Stripe's truth.

The payment worker ends overdue orders it meets too; the reconciler finds the ones
nothing else would look at again: an order whose stock reservation never came
back, one whose webhook was lost while it waited for 3-D Secure, one left
behind by a crash. Its passes and what they did are in the metrics
(``checkout_reconciler_runs_total``, ``checkout_reconciled_orders_total``,
``checkout_orders_overdue``, ``checkout_reconciler_last_run_timestamp_seconds``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg
import structlog

from . import metrics
from .config import CheckoutSettings
from .gateway import PaymentGateway
from .usecases import reconciliation

log = structlog.get_logger(__name__)


class Reconciler:
    def __init__(self, pool: Callable[[], asyncpg.Pool], gateway: PaymentGateway, settings: CheckoutSettings) -> None:
        # The pool exists only once the runtime has started: ask for it when working.
        self._pool = pool
        self._gateway = gateway
        self._settings = settings

    async def run(self) -> None:
        """Reconcile every ``reconcile_interval_s`` until cancelled."""
        while True:
            await self.run_once()
            await asyncio.sleep(self._settings.reconcile_interval_s)

    async def run_once(self) -> reconciliation.ReconcileRun | None:
        """One pass; a failed pass is logged and counted, and the next one tries again."""
        try:
            result = await reconciliation.reconcile_overdue(self._pool(), self._gateway, self._settings)
        except Exception as exc:
            metrics.RECONCILER_RUNS.labels("error").inc()
            log.exception("reconciler pass failed", error=repr(exc))
            return None
        metrics.RECONCILER_RUNS.labels("ok").inc()
        metrics.RECONCILER_LAST_RUN.set(time.time())
        return result
