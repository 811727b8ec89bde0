-- feed: tweets, plus read models of catalog's merchants and products (kept from topics, never by HTTP).

-- Read model of catalog.merchants.v1. No foreign keys to it: topics are not ordered with each other,
-- so a product may arrive before its merchant.
CREATE TABLE merchants (
    id         UUID PRIMARY KEY,
    handle     TEXT NOT NULL,
    name       TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Read model of catalog.products.v1: the latest known state; `version` only ever grows.
CREATE TABLE products (
    id              UUID PRIMARY KEY,
    merchant_id     UUID NOT NULL,
    title           TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    image_url       TEXT,
    price_minor     BIGINT NOT NULL CHECK (price_minor >= 0),
    currency        CHAR(3) NOT NULL,
    stock_available INT NOT NULL CHECK (stock_available >= 0),
    status          TEXT NOT NULL CHECK (status IN ('active', 'delisted')),
    version         INT NOT NULL CHECK (version >= 1),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tweets (
    id                   UUID PRIMARY KEY,
    merchant_id          UUID NOT NULL,
    text                 TEXT NOT NULL CHECK (char_length(text) BETWEEN 1 AND 280),
    product_id           UUID,
    -- The price when the tweet was posted (also in BuyableTweetPosted); the card shows the live one.
    posted_price_minor   BIGINT,
    posted_currency      CHAR(3),
    created_at           TIMESTAMPTZ NOT NULL,
    CHECK ((product_id IS NULL) = (posted_price_minor IS NULL) AND (product_id IS NULL) = (posted_currency IS NULL))
);
-- Timeline pages walk (created_at, id) downwards: the cursor is the last pair seen.
CREATE INDEX tweets_timeline ON tweets (created_at DESC, id DESC);
-- A merchant's own tweets (and, later, the tweets of the merchants a buyer follows).
CREATE INDEX tweets_by_merchant ON tweets (merchant_id, created_at DESC, id DESC);
