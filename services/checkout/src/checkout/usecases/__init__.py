"""Checkout's use cases, one module each: thin, each state change and its events committed together.

``orders`` (place, read, the buyer cancels), ``reservations`` (catalog's answers), ``payments`` (claim, ask
Stripe, settle), ``webhooks`` (Stripe's events), ``reconciliation`` (orders past their deadline),
``refunds``, ``mismatches`` (payments that may not move their order), ``read_models`` (other services' topics),
``buyers`` (buyer accounts: credentials, device link codes, the buyer's orders), ``cards`` (saved cards: the
buyer's Stripe Customer, whose is a PaymentMethod, list and remove).

Stripe is never called inside a database transaction: a payment attempt is recorded and committed first,
Stripe is called, and the outcome is applied in a new transaction under the order's row lock, where the
payment worker and Stripe's webhooks queue, so an order is paid (or failed) exactly once.
"""
