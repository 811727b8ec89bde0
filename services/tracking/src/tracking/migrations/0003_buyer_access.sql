-- The buyer's access: SHA-256 of the order's access token, from OrderPaid.buyer_access_sha256.
-- Reading a shipment (list by order, route, live stream, map page) needs the token that hashes to it.
-- Shipments made before this column (or from an OrderPaid without the field) can be read by operators only.
ALTER TABLE shipments ADD COLUMN buyer_access_hash TEXT CHECK (buyer_access_hash ~ '^[0-9a-f]{64}$');
