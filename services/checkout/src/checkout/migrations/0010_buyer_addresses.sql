-- checkout: saved shipping addresses belong to the buyer account (issue 17), like its orders and saved cards: a
-- few per buyer (the cap is checked under the buyer's row lock, usecases/addresses.py), at most one the default.
-- The same bounds as an order's shipping address (api.ShippingIn); they go with the account (ON DELETE CASCADE).
CREATE TABLE buyer_addresses (
    id         UUID PRIMARY KEY,
    buyer_id   TEXT NOT NULL REFERENCES buyers (id) ON DELETE CASCADE,
    name       TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    line1      TEXT NOT NULL CHECK (char_length(line1) BETWEEN 1 AND 200),
    city       TEXT NOT NULL CHECK (char_length(city) BETWEEN 1 AND 200),
    country    TEXT NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    lat        DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon        DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180),
    is_default BOOLEAN NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX buyer_addresses_by_buyer ON buyer_addresses (buyer_id, created_at);
CREATE UNIQUE INDEX buyer_addresses_one_default ON buyer_addresses (buyer_id) WHERE is_default;
