"""Prometheus metrics of checkout (the backbone's own are in tweetshop_platform.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .domain import OrderStatus

ORDER_TRANSITIONS = Counter(
    "checkout_order_transitions_total",
    "Orders that moved between statuses (from_status 'new' for placed orders)",
    ["from_status", "to_status"],
)
STRIPE_SECONDS = Histogram(
    "checkout_stripe_call_seconds",
    "Duration of calls to Stripe, by operation",
    ["operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PAYMENTS_IN_FLIGHT = Gauge(
    "checkout_payments_in_flight", "Orders the payment worker has with Stripe right now (at most payment_max_in_flight)"
)
STRIPE_ERRORS = Counter(
    "checkout_stripe_errors_total", "Calls to Stripe that raised, by operation and error", ["operation", "error"]
)
PAYMENT_RETRIES = Counter(
    "checkout_payment_retries_total", "Payments put back for a later try because Stripe was unavailable"
)
PAYMENTS_HANDED_OVER = Counter(
    "checkout_payments_handed_over_total",
    "Orders placed from the allocation already leased to this process's payment worker and handed to it, with no "
    "claim (the others are claimed: checkout_payments_in_flight counts both)",
)
PAYMENT_APPLY_CONFLICTS = Counter(
    "checkout_payment_apply_conflicts_total",
    "Stripe answers the payment worker could not apply to its order as claimed, because the order changed "
    "meanwhile (a webhook, a cancellation): applied under the order's row lock instead",
)
WEBHOOKS = Counter("checkout_stripe_webhooks_total", "Stripe webhook deliveries by outcome", ["event_type", "outcome"])
UNEXPECTED_PAYMENTS = Counter(
    "checkout_unexpected_payments_total",
    "Payments that succeeded for orders already failed, cancelled or paid by another intent (refund by hand)",
)
RECONCILER_RUNS = Counter(
    "checkout_reconciler_runs_total", "Passes of the reconciler over overdue orders, by result", ["result"]
)
RECONCILED = Counter(
    "checkout_reconciled_orders_total",
    "Orders past their payment deadline the reconciler took up, by where they ended ('retry': Stripe unreachable)",
    ["outcome"],
)
OVERDUE_ORDERS = Gauge(
    "checkout_orders_overdue",
    "Orders still waiting for their payment past the deadline, at the last reconciler pass (alert if it stays > 0)",
)
RECONCILER_LAST_RUN = Gauge(
    "checkout_reconciler_last_run_timestamp_seconds", "When the reconciler last finished a pass (Unix time)"
)
PAYMENT_MISMATCHES = Counter(
    "checkout_payment_mismatches_total",
    "News of a PaymentIntent that was not allowed to move its order (another intent than the order's own, or an "
    "amount, currency or mode other than the order's), by reason and where it came from; each is in the "
    "payment_mismatches table and the logs, and a succeeded one may need a refund by hand",
    ["reason", "source"],
)
UNPAID_CAP_REFUSALS = Counter(
    "checkout_unpaid_orders_refused_total",
    "Orders refused (429) because the buyer, the payment method or the address had unpaid_orders_cap orders waiting",
    ["limit"],
)


def count_transition(before: OrderStatus | None, after: OrderStatus) -> None:
    """Count an order that moved (``before`` None: a new order); staying where it was counts nothing."""
    if before != after:
        ORDER_TRANSITIONS.labels(before or "new", after).inc()
