-- checkout: payment deadlines (the reconciler) and Stripe outage backoff.

-- Stripe calls that failed in a row for this order (network, 5xx, 429); the retry delay grows with it.
ALTER TABLE orders ADD COLUMN payment_retries INT NOT NULL DEFAULT 0 CHECK (payment_retries >= 0);

-- The reconciler's scan: only orders still waiting for their payment are indexed, oldest first.
CREATE INDEX orders_awaiting_payment ON orders (created_at) WHERE status IN ('pending', 'requires_action');
