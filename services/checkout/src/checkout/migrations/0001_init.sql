-- checkout: read models of other services' topics, orders, refunds, Stripe events seen.

-- catalog.products.v1: price, currency and stock as catalog last published them (newest version wins).
CREATE TABLE products (
    id              UUID PRIMARY KEY,
    merchant_id     UUID NOT NULL,
    title           TEXT NOT NULL,
    price_minor     BIGINT NOT NULL CHECK (price_minor >= 0),
    currency        CHAR(3) NOT NULL,
    stock_available INT NOT NULL CHECK (stock_available >= 0),
    status          TEXT NOT NULL CHECK (status IN ('active', 'delisted')),
    version         INT NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- feed.buyable-tweets.v1: which product a tweet sells.
CREATE TABLE buyable_tweets (
    tweet_id    UUID PRIMARY KEY,
    product_id  UUID NOT NULL,
    merchant_id UUID NOT NULL,
    posted_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE orders (
    id                   UUID PRIMARY KEY,
    -- Idempotency: one order per key, whoever races; the key itself is not stored.
    idempotency_key_hash TEXT NOT NULL UNIQUE,
    request_hash         TEXT NOT NULL,
    access_token_hash    TEXT NOT NULL,
    access_token_sealed  TEXT NOT NULL,
    tweet_id             UUID NOT NULL,
    product_id           UUID NOT NULL,
    merchant_id          UUID NOT NULL,
    quantity             INT NOT NULL CHECK (quantity > 0),
    buyer_id             TEXT NOT NULL,
    buyer_email          TEXT NOT NULL,
    ship_name            TEXT NOT NULL,
    ship_line1           TEXT NOT NULL,
    ship_city            TEXT NOT NULL,
    ship_country         CHAR(2) NOT NULL,
    ship_lat             DOUBLE PRECISION NOT NULL CHECK (ship_lat BETWEEN -90 AND 90),
    ship_lon             DOUBLE PRECISION NOT NULL CHECK (ship_lon BETWEEN -180 AND 180),
    payment_method       TEXT NOT NULL,
    unit_price_minor     BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    amount_minor         BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency             CHAR(3) NOT NULL,
    status               TEXT NOT NULL
        CHECK (status IN ('pending', 'requires_action', 'paid', 'failed', 'cancelled', 'refunded')),
    stock_reserved       BOOLEAN NOT NULL DEFAULT false,
    -- Payment attempts recorded (committed) before each call to Stripe that may create a PaymentIntent.
    payment_attempts     INT NOT NULL DEFAULT 0,
    -- When the payment worker should next look at this order; NULL: nothing to do.
    payment_due_at       TIMESTAMPTZ,
    payment_intent_id    TEXT UNIQUE,
    client_secret        TEXT,
    failure_reason       TEXT,
    cancel_reason        TEXT,
    refunded_minor       BIGINT NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    shipment_id          UUID,
    shipment_status      TEXT,
    correlation_id       TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The payment worker's queue: only orders with something to do are indexed.
CREATE INDEX orders_payment_due ON orders (payment_due_at) WHERE payment_due_at IS NOT NULL;

CREATE TABLE refunds (
    id               UUID PRIMARY KEY,
    order_id         UUID NOT NULL REFERENCES orders (id),
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    status           TEXT NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    stripe_refund_id TEXT UNIQUE,
    failure_reason   TEXT,
    -- A requested refund whose Stripe answer was lost is completed by the worker from then on.
    recheck_at       TIMESTAMPTZ NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_order ON refunds (order_id);
CREATE INDEX refunds_requested ON refunds (recheck_at) WHERE status = 'requested';

-- Each Stripe event (webhook delivery) is applied once.
CREATE TABLE stripe_events (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    order_id    UUID,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
