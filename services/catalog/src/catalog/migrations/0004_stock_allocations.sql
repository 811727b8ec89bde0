-- catalog: units of a product allocated to checkout (contract 1.4.0, catalog.allocations.v1). They are part of
-- stock_available (still on sale); checkout reserves from them in the order's own transaction and tells catalog in
-- OrderPlaced.allocation_generation. Stock set below what is allocated starts a new generation, which takes the
-- allocation back.
ALTER TABLE products ADD COLUMN stock_allocated INT NOT NULL DEFAULT 0 CHECK (stock_allocated >= 0);
ALTER TABLE products ADD COLUMN allocation_generation INT NOT NULL DEFAULT 0 CHECK (allocation_generation >= 0);
ALTER TABLE products ADD CONSTRAINT products_allocated_on_sale CHECK (stock_allocated <= stock_available);
-- Units of taken-back generations that checkout may still have reserved for orders it took before it heard, until
-- those orders arrive or checkout gives the rest back (StockAllocationReturned on checkout.allocations.v1).
ALTER TABLE products ADD COLUMN stock_returning INT NOT NULL DEFAULT 0 CHECK (stock_returning >= 0);
