-- checkout: the version of its copy of the product an order was placed against. A reserved order counts against
-- that copy until a newer version arrives (repository.get_product_and_tweet): catalog's StockReserved can reach
-- checkout before the ProductUpdated that shows it. Indexed for reserved orders, by version: only the newest few
-- of a product are ever read.
ALTER TABLE orders ADD COLUMN stock_version_seen INT;
CREATE INDEX orders_reserved_by_version ON orders (product_id, stock_version_seen) WHERE stock_reserved;
