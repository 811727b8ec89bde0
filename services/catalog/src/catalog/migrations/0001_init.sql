-- catalog: merchants, products and their stock, and one reservation per order.

CREATE TABLE merchants (
    id           UUID PRIMARY KEY,
    handle       TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    api_key_hash TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE products (
    id              UUID PRIMARY KEY,
    merchant_id     UUID NOT NULL REFERENCES merchants (id),
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    image_url       TEXT,
    price_minor     BIGINT NOT NULL CHECK (price_minor > 0),
    currency        CHAR(3) NOT NULL,
    stock_available INT NOT NULL CHECK (stock_available >= 0),
    stock_reserved  INT NOT NULL DEFAULT 0 CHECK (stock_reserved >= 0),
    stock_sold      INT NOT NULL DEFAULT 0 CHECK (stock_sold >= 0),
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'delisted')),
    version         INT NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX products_by_merchant ON products (merchant_id, created_at DESC);

-- One row per order: the order id makes reserve/commit/release idempotent beyond the inbox.
CREATE TABLE reservations (
    order_id   UUID PRIMARY KEY,
    product_id UUID NOT NULL,
    quantity   INT NOT NULL CHECK (quantity > 0),
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'rejected', 'committed', 'released', 'returned')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
