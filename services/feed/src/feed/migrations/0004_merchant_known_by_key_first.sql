-- feed: a merchant's key rotation may arrive before its registration (catalog.merchants.v1 is replayed, and
-- the rotation is the newer word on the key): it creates the merchant's row with the key hash alone, and the
-- registration fills in the handle and name later. Until then the merchant is not known to feed (it cannot
-- post, be followed, or show on tweets), exactly as before its row existed.
ALTER TABLE merchants ALTER COLUMN handle DROP NOT NULL, ALTER COLUMN name DROP NOT NULL;
ALTER TABLE merchants ADD CONSTRAINT merchants_registered_together CHECK ((handle IS NULL) = (name IS NULL));
