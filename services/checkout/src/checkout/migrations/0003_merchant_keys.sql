-- checkout: who may refund an order. Read model of catalog.merchants.v1: the SHA-256 of each merchant's
-- API key (MerchantRegistered.api_key_sha256, then MerchantApiKeyRotated). Refunds of a merchant's orders
-- need the key that hashes to it (or the operator key).
CREATE TABLE merchants (
    id           UUID PRIMARY KEY,
    api_key_hash TEXT CHECK (api_key_hash ~ '^[0-9a-f]{64}$'),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
