-- checkout: buyer accounts without passwords (issue 17). A buyer is an opaque id; each device holds a bearer
-- credential (tsb_…) stored only as its SHA-256; a short one-time code links another device. An order placed
-- with a credential belongs to that buyer (orders.buyer_account), whatever buyer id its body named.
CREATE TABLE buyers (
    id         TEXT PRIMARY KEY CHECK (id ~ '^ba_[0-9a-f]{32}$'),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per device. vault_sealed: the buyer's vault key sealed with this credential (checkout.accounts), which
-- opens the access tokens of the buyer's orders; without the credential it is noise.
CREATE TABLE buyer_credentials (
    token_hash   TEXT PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    buyer_id     TEXT NOT NULL REFERENCES buyers (id) ON DELETE CASCADE,
    vault_sealed TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX buyer_credentials_by_buyer ON buyer_credentials (buyer_id);

-- At most one live code per buyer (a new one replaces it); the handle (first 4 characters) finds it, the whole
-- code is stored only as its SHA-256; used once, burnt after a few wrong guesses, dead after expires_at.
CREATE TABLE buyer_link_codes (
    handle          TEXT PRIMARY KEY CHECK (handle ~ '^[2-9A-HJ-NP-Z]{4}$'),
    buyer_id        TEXT NOT NULL UNIQUE REFERENCES buyers (id) ON DELETE CASCADE,
    code_hash       TEXT NOT NULL CHECK (code_hash ~ '^[0-9a-f]{64}$'),
    vault_sealed    TEXT NOT NULL,
    failed_attempts INT NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    expires_at      TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX buyer_link_codes_expiry ON buyer_link_codes (expires_at);

-- The account an order belongs to (NULL: placed without a credential), and the order's access token sealed with
-- the buyer's vault key, so that every device of the buyer gets the tracking link.
ALTER TABLE orders ADD COLUMN buyer_account TEXT REFERENCES buyers (id);
ALTER TABLE orders ADD COLUMN access_token_vaulted TEXT;
-- "My orders", newest first, by keyset.
CREATE INDEX orders_by_buyer_account ON orders (buyer_account, created_at DESC, id DESC)
    WHERE buyer_account IS NOT NULL;
