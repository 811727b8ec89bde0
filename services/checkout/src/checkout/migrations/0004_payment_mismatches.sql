-- checkout: news of a PaymentIntent that may not move its order (another intent than the order's own, an
-- amount, currency or mode other than the order's, an intent not recorded on the order). Kept for an operator
-- (the payment may need a refund by hand); the order itself is never changed by such news.
CREATE TABLE payment_mismatches (
    order_id          UUID NOT NULL,
    payment_intent_id TEXT NOT NULL CHECK (length(payment_intent_id) BETWEEN 1 AND 255),
    reason            TEXT NOT NULL CHECK (reason IN ('foreign_intent', 'unrecorded_intent', 'other_order',
                                                      'unverified', 'amount', 'currency', 'livemode')),
    source            TEXT NOT NULL CHECK (source IN ('worker', 'webhook', 'reconciler', 'buyer_cancel')),
    outcome           TEXT NOT NULL,
    intent_amount_minor BIGINT,
    intent_currency   TEXT CHECK (length(intent_currency) <= 16),
    intent_livemode   BOOLEAN,
    first_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    times_seen        INT NOT NULL DEFAULT 1,
    PRIMARY KEY (order_id, payment_intent_id, reason, source)
);
CREATE INDEX payment_mismatches_recent ON payment_mismatches (last_seen_at DESC);
