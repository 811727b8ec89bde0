-- feed: the merchants' API key verifiers (SHA-256), from catalog.merchants.v1
-- (MerchantRegistered.api_key_sha256, then MerchantApiKeyRotated). A tweet is posted as a merchant only
-- with the key that hashes to it. NULL: the merchant was announced without one (it cannot post until it rotates).
ALTER TABLE merchants ADD COLUMN api_key_hash TEXT CHECK (api_key_hash ~ '^[0-9a-f]{64}$');
