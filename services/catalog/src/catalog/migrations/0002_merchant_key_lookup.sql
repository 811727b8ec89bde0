-- catalog: find the merchant a presented API key belongs to (GET /merchants/me signs a merchant in by key).
-- Unique: each key is 32 random bytes, so two merchants never share a hash.
CREATE UNIQUE INDEX merchants_by_api_key_hash ON merchants (api_key_hash);
